"""MediaPipe face-mesh landmarks (478 points) with per-face boxes, and their index groups.

Points are returned in the project's pixel convention (OpenCV: (0, 0) is the centre of the top-left
pixel). MediaPipe's normalised coordinates count from the image's outer edge, so
u = x_norm * W - 0.5, v = y_norm * H - 0.5.
Faces the short-range detector misses (small faces in large photos) are retried on crops around
the faces found by MediaPipe's full-range face detector.
"""
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError, NoFaceError
from ..io import quiet_native_stderr

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_LANDMARKS = 478

# Public MediaPipe -> iBUG/dlib 68 table (PeizhiYan/Mediapipe_2_Dlib_Landmarks): each 68-point is the
# mean of one or two MediaPipe points. Index 0..16 contour, 17..26 brows, 27..35 nose, 36..47 eyes,
# 48..67 mouth.
MEDIAPIPE_TO_68 = [
    [127], [234], [93], [132, 58], [58, 172], [136], [150], [176], [152], [400], [379], [365],
    [397, 288], [361], [323], [454], [356],
    [70], [63], [105], [66], [107], [336], [296], [334], [293], [300],
    [168, 6], [197, 195], [5], [4], [75], [97], [2], [326], [305],
    [33], [160], [158], [133], [153], [144], [362], [385], [387], [263], [373], [380],
    [61], [39], [37], [0], [267], [269], [291], [321], [314], [17], [84], [91],
    [78], [82], [13], [312], [308], [317], [14], [87],
]
IBUG68_GROUPS = {"contour": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
                 "eyes": range(36, 48), "mouth": range(48, 68)}
INNER_51 = np.arange(17, 68)


def to_68(points):
    """(478, D) MediaPipe points -> (68, D) iBUG-68 points by the table above."""
    return weights_to_68() @ np.asarray(points, float)


def outer_interocular(points):
    """Outer-corner eye distance (iBUG 36 – 45) of (478, D) MediaPipe or (68, D) iBUG points, in their
    units (px or mm)."""
    p68 = np.asarray(points, float) if len(points) == 68 else to_68(points)
    return float(np.linalg.norm(p68[36] - p68[45]))


def landmark_error(fitted, detected, use=None, iod_px=None):
    """How far fitted landmarks (L, 2) px lie from detected ones (L, 2) px: (the median distance over the
    landmarks `use` (bool mask or indices; default all), that median / iod_px, by default the detected
    outer interocular distance). The one landmark error of the fits, each choosing its landmarks."""
    d = np.linalg.norm(np.asarray(fitted, float) - np.asarray(detected, float), axis=1)
    median = float(np.median(d if use is None else d[use]))
    iod = outer_interocular(detected) if iod_px is None else iod_px
    return median, median / max(iod, 1e-9)


def five_points(p68):
    """(5, D) right eye centre, left eye centre, nose tip, right and left mouth corner of iBUG-68 points
    (the MICC protocol's alignment points)."""
    p68 = np.asarray(p68, float)
    return np.stack([p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48], p68[54]])


@lru_cache(maxsize=1)
def weights_to_68():
    """(68, 478) matrix W with to_68(P) == W @ P (read-only)."""
    W = np.zeros((68, N_LANDMARKS))
    for i, idx in enumerate(MEDIAPIPE_TO_68):
        W[i, idx] = 1.0 / len(idx)
    W.setflags(write=False)
    return W


def _loops(edges):
    """Chain an undirected edge set into ordered vertex paths (closed loops or open polylines)."""
    adj = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen, paths = set(), []
    starts = [v for v, n in adj.items() if len(n) == 1] + sorted(adj)
    for s in starts:
        if s in seen:
            continue
        path, prev, cur = [s], None, s
        seen.add(s)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            path.append(cur)
            seen.add(cur)
        paths.append(path)
    return paths


@lru_cache(maxsize=1)
def groups():
    """Disjoint MediaPipe index groups: name -> sorted indices (contour, brows, irises, eyes, lips, nose, other)."""
    from mediapipe.python.solutions import face_mesh_connections as c

    def idx(*sets):
        return np.array(sorted({i for s in sets for e in s for i in e}), dtype=np.int64)

    ordered = [("contour", idx(c.FACEMESH_FACE_OVAL)),
               ("brows", idx(c.FACEMESH_LEFT_EYEBROW, c.FACEMESH_RIGHT_EYEBROW)),
               ("irises", np.arange(468, 478)),
               ("eyes", idx(c.FACEMESH_LEFT_EYE, c.FACEMESH_RIGHT_EYE)),
               ("lips", idx(c.FACEMESH_LIPS)),
               ("nose", idx(c.FACEMESH_NOSE))]
    g, taken = {}, np.zeros(N_LANDMARKS, bool)
    for name, members in ordered:  # disjoint: a point belongs to the first group that lists it
        members = members[~taken[members]]
        taken[members] = True
        g[name] = members
    g["other"] = np.flatnonzero(~taken)
    return g


@lru_cache(maxsize=1)
def polygons():
    """Ordered MediaPipe index paths of each feature outline: name -> list of paths.

    Closed outlines (face_oval, eyes, outer/inner lips) are one loop; a brow is two open polylines
    (upper and lower edge), joined into a ring by `ring` with the actual points.
    """
    from mediapipe.python.solutions import face_mesh_connections as c

    lips = sorted(_loops(c.FACEMESH_LIPS), key=len, reverse=True)
    return {
        "face_oval": _loops(c.FACEMESH_FACE_OVAL),
        "left_eye": _loops(c.FACEMESH_LEFT_EYE),
        "right_eye": _loops(c.FACEMESH_RIGHT_EYE),
        "left_brow": _loops(c.FACEMESH_LEFT_EYEBROW),
        "right_brow": _loops(c.FACEMESH_RIGHT_EYEBROW),
        "outer_lips": [lips[0]],
        "inner_lips": [lips[1]],
    }


def ring(points, paths):
    """(K, 2) polygon through `paths` of `points`: one loop as is, two polylines joined end to end."""
    if len(paths) == 1:
        return points[paths[0]]
    a, b = points[paths[0]], points[paths[1]]
    if np.linalg.norm(a[-1] - b[-1]) < np.linalg.norm(a[-1] - b[0]):
        b = b[::-1]
    return np.concatenate([a, b])


@dataclass
class FaceLandmarks:
    """Landmarks of one face. points: (478, 2) float64 pixels; z: (478,) MediaPipe relative depth
    (pixels, smaller = nearer); box: (x0, y0, x1, y1) pixels."""

    points: np.ndarray
    z: np.ndarray
    box: tuple
    image_size: tuple  # (W, H)

    @property
    def area(self):
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    def interocular(self):
        """Outer-corner eye distance in pixels (iBUG 36 - 45)."""
        return outer_interocular(self.points)

    def to_dict(self):
        return {"points": np.round(self.points, 3).tolist(), "box": [float(b) for b in self.box],
                "image_size": list(self.image_size)}


class _Detectors:
    """MediaPipe graphs are costly to build: one per process, behind a lock (they are not thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mesh = {}
        self.detector = None

    def face_mesh(self, max_faces):
        if max_faces not in self.mesh:
            with quiet_native_stderr():
                import mediapipe as mp

                mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                    min_detection_confidence=0.5)
                mesh.process(np.zeros((64, 64, 3), np.uint8))  # the first call starts TFLite (and logs)
            self.mesh[max_faces] = mesh
        return self.mesh[max_faces]

    def face_detector(self):
        if self.detector is None:
            with quiet_native_stderr():
                import mediapipe as mp

                det = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
                det.process(np.zeros((64, 64, 3), np.uint8))
            self.detector = det
        return self.detector


_detectors = _Detectors()


def _mesh_on(image, max_faces):
    H, W = image.shape[:2]
    mesh = _detectors.face_mesh(max_faces)
    with quiet_native_stderr():  # MediaPipe logs calculator warnings on fd 2 for each new image size
        res = mesh.process(np.ascontiguousarray(image))
    out = []
    for lm in res.multi_face_landmarks or []:
        a = np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float64)
        pts = np.stack([a[:, 0] * W - 0.5, a[:, 1] * H - 0.5], axis=1)
        out.append((pts, a[:, 2] * W))
    return out


def _box(points):
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def detect_landmarks(image, all_faces=False, max_faces=8):
    """Landmarks of the faces in an (H, W, 3) uint8 RGB image, largest face first.

    Returns a list (one face unless all_faces). Raises NoFaceError when no face is found.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    H, W = image.shape[:2]
    with _detectors.lock:
        found = _mesh_on(image, max_faces if all_faces else 1)
        if not found or all_faces:
            found += _faces_from_crops(image, found, max_faces if all_faces else 1)
    if not found:
        raise NoFaceError("no face found in the image (MediaPipe face mesh and full-range face detector)")
    faces = [FaceLandmarks(p, z, _box(p), (W, H)) for p, z in found]
    faces.sort(key=lambda f: -f.area)
    return faces if all_faces else faces[:1]


def _faces_from_crops(image, already, max_faces):
    """Run the face mesh on upscaled crops around faces found by the full-range detector."""
    import cv2

    H, W = image.shape[:2]
    det = _detectors.face_detector()
    with quiet_native_stderr():
        res = det.process(np.ascontiguousarray(image))
    out = []
    for det in (res.detections or [])[:max_faces]:
        b = det.location_data.relative_bounding_box
        x0, y0, bw, bh = b.xmin * W, b.ymin * H, b.width * W, b.height * H
        cx, cy = x0 + bw / 2, y0 + bh / 2
        if any(p[:, 0].min() <= cx <= p[:, 0].max() and p[:, 1].min() <= cy <= p[:, 1].max() for p, _ in already + out):
            continue
        half = 1.2 * max(bw, bh)
        cx0, cy0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        cx1, cy1 = int(min(cx + half, W)), int(min(cy + half, H))
        crop = image[cy0:cy1, cx0:cx1]
        if crop.shape[0] < 8 or crop.shape[1] < 8:
            continue
        s = 384.0 / max(crop.shape[:2])
        crop_s = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
        for p, z in _mesh_on(crop_s, 1):
            p = (p + 0.5) / s - 0.5 + np.array([cx0, cy0])
            out.append((p, z / s))
    return out
