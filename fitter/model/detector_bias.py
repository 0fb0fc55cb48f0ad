"""The landmark detector's bias, seen by running it on a render of the fit.

MediaPipe places its points partly by its own shape prior, so on a face unlike that prior the points it
returns are shifted in a way that depends on the face. After a fit, the residual detected − fitted is
therefore mostly that shift, not shape (BENCHMARKS.md, medium stage: it correlates 0.0–0.3 with the
true residual). The shift can be observed: run the detector on a render of the fitted mesh, Q. Where
the fit is right, the detector errs on the render as it does on the photo, so the *detector-consistent*
residual P − Q (P: the photo's detections) is what is left of the shape; it correlates 0.3–0.6 with
the true residual on synthetic faces outside the model's span (measured, `facefit bench medium`).

The render uses the painted albedo and the mean light and background of the landmark embedding's own
renders (fitter.model.painting, fitter.install.embedding_build), so the detector sees the kind of image the
embedding was measured on.
"""
import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import Camera, crop_matrix, square_box
from ..geometry.render import get_renderer
from .painting import RENDER_BACKGROUND

RENDER_LIGHT = (0.0, -0.25, -1.0)          # the mean light of the embedding's renders
RENDER_PX = 320                            # side of the rendered face crop


def face_crop_camera(camera: Camera, points_2d, size, margin=0.25):
    """Camera of a size×size crop around 2D points (N, 2) of `camera`'s image (a square box of the
    points' extent plus `margin` of it on each side), and the 3×3 matrix A (`crop_matrix`) with crop
    pixel = A · photo pixel."""
    A = crop_matrix(*square_box(points_2d, margin), size)
    return camera.cropped(A, size), A


def render_face_crop(prepared, V, camera: Camera, points_2d, size=RENDER_PX):
    """uint8 (size, size, 3) render of V (model frame, mm; the painted albedo of the PreparedModel) seen by
    `camera`, cropped around points_2d (photo pixels), and the matrix A of `face_crop_camera`."""
    cam, A = face_crop_camera(camera, np.asarray(points_2d, float), size)
    img = get_renderer().render(V, prepared.render_faces, cam, vertex_colors=prepared.painted_albedo,
                                light_dir=RENDER_LIGHT, background=RENDER_BACKGROUND).color_uint8()
    return img, A


def detect_on_fit(prepared, V, camera: Camera, points_2d, detect=None, size=RENDER_PX):
    """(478, 2) landmarks, in photo pixels, that the detector finds on a render of the fitted mesh V
    (its face crop around points_2d, e.g. the fitted landmarks). detect: uint8 RGB image -> (478, 2)
    (default: MediaPipe, the photos' detector). Raises NoFaceError when it finds no face."""
    img, A = render_face_crop(prepared, V, camera, points_2d, size)
    Q = np.asarray(detect(img) if detect else lmk.detect_landmarks(img)[0].points, float)
    return (np.c_[Q, np.ones(len(Q))] @ np.linalg.inv(A).T)[:, :2]
