"""Face parsing: skin / brows / eyes / lips / inner mouth / other, from the landmark outlines and
MediaPipe's person segmentation (selfie segmentation, shipped in the mediapipe wheel).

Labels are painted in order of precedence: face oval ∧ person -> skin, then brows, eyes, lips
(outer lip ring minus the inner-lip hole) and inner mouth. Pixels outside the face oval are OTHER.
"""
import threading
from enum import IntEnum

import numpy as np

from ..io import quiet_native_stderr
from .landmarks import FaceLandmarks, polygons, ring


class FaceLabel(IntEnum):
    OTHER = 0
    SKIN = 1
    BROWS = 2
    EYES = 3
    LIPS = 4
    INNER_MOUTH = 5


LABEL_COLORS = np.array([[0, 0, 0], [224, 172, 138], [90, 50, 20], [60, 120, 255], [200, 40, 60], [80, 0, 40]],
                        dtype=np.uint8)

_seg_lock = threading.Lock()
_seg = None


def person_mask(image):
    """(H, W) float32 in [0, 1]: probability that a pixel belongs to a person (MediaPipe selfie segmentation)."""
    global _seg
    with _seg_lock:
        if _seg is None:
            with quiet_native_stderr():
                import mediapipe as mp

                _seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
                _seg.process(np.zeros((64, 64, 3), np.uint8))
        with quiet_native_stderr():
            res = _seg.process(np.ascontiguousarray(image))
    return np.asarray(res.segmentation_mask, dtype=np.float32)


def _fill(mask, poly, value=1):
    import cv2

    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], value, lineType=cv2.LINE_8, shift=4)


MIN_PERSON_COVER = 0.3  # below this share of the face oval the person mask has missed the face


def parse_face(image, face: FaceLandmarks, person=None, person_threshold=0.5):
    """(H, W) uint8 FaceLabel map of one face. `person` is person_mask(image) when already computed.
    Skin is the face oval where the person mask says "person"; when the mask misses the face altogether
    (it covers < 30 % of the oval: e.g. the selfie model on a small grey portrait or a render), the oval
    alone is used, since the landmarks themselves say where the face is."""
    H, W = image.shape[:2]
    P = face.points
    outlines = polygons()
    labels = np.zeros((H, W), np.uint8)
    oval = np.zeros((H, W), np.uint8)
    _fill(oval, ring(P, outlines["face_oval"]))
    if person is None:
        person = person_mask(image)
    inside = oval > 0
    is_person = person >= person_threshold
    if inside.any() and is_person[inside].mean() < MIN_PERSON_COVER:
        is_person = np.ones_like(is_person)
    labels[inside & is_person] = FaceLabel.SKIN
    for name, label in (("left_brow", FaceLabel.BROWS), ("right_brow", FaceLabel.BROWS),
                        ("left_eye", FaceLabel.EYES), ("right_eye", FaceLabel.EYES),
                        ("outer_lips", FaceLabel.LIPS), ("inner_lips", FaceLabel.INNER_MOUTH)):
        m = np.zeros((H, W), np.uint8)
        _fill(m, ring(P, outlines[name]))
        labels[m > 0] = label
    return labels


def colorize(labels):
    """(H, W, 3) uint8 picture of a label map."""
    return LABEL_COLORS[np.asarray(labels)]
