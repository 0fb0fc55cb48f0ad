"""Which frames of a video to fit: follow one person, score each frame, keep the best few per yaw bin.

- Tracking (`Tracker`): in each frame, the detected face nearest the previous tracked face (box centres,
  in units of the previous box's size) is the person; the first face followed is the largest. A face
  farther than TRACK_MAX_JUMP box sizes away is somebody else ("other person"). After TRACK_LOST_FRAMES
  scanned frames in a row with faces but none near the track (the person left and came back elsewhere,
  or a cut), the track starts again on the largest face.
- Scores: sharpness = variance of the Laplacian of the face crop resampled to SHARPNESS_CROP_PX²
  (grey, [0, 255]); face size = outer interocular distance (px); yaw (degrees) from a PnP pose of the
  mean face's landmarks (fitter.photo.coarse.initial_pose).
- Selection (eos's scheme): yaw bins with edges ±10/30/50/70°; frames whose sharpness is below
  BLUR_RATIO × the video's median are blurred, faces under MIN_FACE_PX are too small; in each bin the
  `per_bin` frames with the best score (relative sharpness + relative size) are kept.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..detection import landmarks as lmk

YAW_BIN_EDGES = (-70.0, -50.0, -30.0, -10.0, 10.0, 30.0, 50.0, 70.0)  # 9 bins
TRACK_MAX_JUMP = 1.5        # box sizes: farther than this from the previous face is another person
TRACK_LOST_FRAMES = 6       # scanned frames without the person (but with faces) before the track restarts
SHARPNESS_CROP_PX = 128     # the face crop's side for the sharpness measure
BLUR_RATIO = 0.5            # sharpness below this × the median of the video's faces: blurred
MIN_FACE_PX = 12.0          # outer interocular distance below this: too small to fit
KEEP_IMAGES_PER_BIN = 6     # per bin, only the images of this many best-scored frames stay in memory


@dataclass
class FrameRecord:
    """One scanned frame: what was found, its scores, and what became of it."""

    index: int
    time_s: float
    status: str = "scanned"              # unreadable | no face | other person | blurred | too small | not selected | kept | dropped
    reason: str = ""
    face: Optional[lmk.FaceLandmarks] = None
    sharpness: float = float("nan")
    face_px: float = float("nan")        # outer interocular distance, px
    yaw_deg: float = float("nan")
    score: float = float("nan")
    image: Optional[np.ndarray] = field(default=None, repr=False)  # kept only while it may be selected
    source: str = ""                     # the photo's path, when the views are photos

    @property
    def image_size(self):
        return self.face.image_size if self.face is not None else None

    def to_dict(self):
        d = {"index": self.index, "time_s": round(self.time_s, 4), "status": self.status}
        if self.source:
            d["source"] = self.source
        if self.reason:
            d["reason"] = self.reason
        for k in ("sharpness", "face_px", "yaw_deg", "score"):
            v = getattr(self, k)
            if np.isfinite(v):
                d[k] = round(float(v), 3)
        return d


def box_center_and_size(box):
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0, 1e-6)


def follow(faces, previous_box):
    """The face of `faces` (FaceLandmarks list) that continues the track, or None when every face is
    farther than TRACK_MAX_JUMP box sizes from `previous_box` (None: start the track on the largest)."""
    if not faces:
        return None
    if previous_box is None:
        return max(faces, key=lambda f: f.area)
    c0, s0 = box_center_and_size(previous_box)
    dist = [np.linalg.norm(box_center_and_size(f.box)[0] - c0) / s0 for f in faces]
    k = int(np.argmin(dist))
    return faces[k] if dist[k] <= TRACK_MAX_JUMP else None


@dataclass
class Tracker:
    """Follows one person through the scanned frames (see the module docstring)."""

    box: Optional[tuple] = None
    lost: int = 0

    def update(self, faces):
        """The tracked face among `faces` (FaceLandmarks list), or None; updates the track."""
        face = follow(faces, self.box)
        if face is None and faces:
            self.lost += 1
            if self.lost >= TRACK_LOST_FRAMES:
                face = follow(faces, None)
        if face is not None:
            self.box, self.lost = face.box, 0
        return face


def face_sharpness(image, face: lmk.FaceLandmarks):
    """Variance of the Laplacian of the face's square crop, resampled to SHARPNESS_CROP_PX² grey."""
    import cv2

    from ..geometry.camera import crop_image, square_box

    crop, _ = crop_image(image, square_box(face.points, 0.0, whole_pixels=True), SHARPNESS_CROP_PX)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def estimate_yaw(prepared, points, image_size, focal=None):
    """Head yaw (degrees, fitter.geometry.camera.yaw_of_rotation) of detected landmarks (478, 2): PnP of the mean
    face's landmarks, the focal length given or the coarse stage's prior."""
    from ..geometry.camera import Camera, yaw_of_rotation
    from ..photo.coarse import check_focal_for_image, initial_pose, region_weights

    check_focal_for_image(focal, image_size)
    w = region_weights() * prepared.require_embedding().weights
    R, _ = initial_pose(prepared.landmark_basis.at_yaw(0.0)[0], np.asarray(points, float),
                        Camera.for_image(*image_size, focal or None), w)
    return float(yaw_of_rotation(R))


def yaw_bin(yaw_deg, edges=YAW_BIN_EDGES):
    return int(np.searchsorted(np.asarray(edges), yaw_deg))


def release_images(records, edges=YAW_BIN_EDGES, keep=KEEP_IMAGES_PER_BIN):
    """Bound memory while scanning: per yaw bin, drop the images of all but the `keep` best-scored
    candidates (by sharpness × size, the order `select_frames` uses)."""
    held = [r for r in records if r.image is not None and r.face is not None]
    for b in {yaw_bin(r.yaw_deg, edges) for r in held}:
        in_bin = sorted((r for r in held if yaw_bin(r.yaw_deg, edges) == b),
                        key=lambda r: -(np.log(max(r.sharpness, 1e-9)) + np.log(max(r.face_px, 1e-9))))
        for r in in_bin[keep:]:
            r.image = None


def select_frames(records, per_bin=2, edges=YAW_BIN_EDGES, blur_ratio=BLUR_RATIO, min_face_px=MIN_FACE_PX):
    """Mark the records (FrameRecord list, a face found in each candidate): blurred and too-small frames,
    then the `per_bin` best per yaw bin kept ("kept"), the others "not selected". Returns the kept
    records in time order."""
    faces = [r for r in records if r.face is not None]
    if not faces:
        return []
    med_sharp = float(np.median([r.sharpness for r in faces]))
    med_size = float(np.median([r.face_px for r in faces]))
    candidates = []
    for r in faces:
        if r.face_px < min_face_px:
            r.status, r.reason = "too small", f"interocular distance {r.face_px:.1f} px < {min_face_px:g}"
        elif r.sharpness < blur_ratio * med_sharp:
            r.status, r.reason = "blurred", (f"sharpness {r.sharpness:.1f} < {blur_ratio:g} x the video's median "
                                             f"{med_sharp:.1f}")
        else:
            r.score = min(r.sharpness / max(med_sharp, 1e-9), 2.0) + min(r.face_px / max(med_size, 1e-9), 2.0)
            r.status, r.reason = "not selected", ""
            candidates.append(r)
    kept = []
    for b in range(len(edges) + 1):
        in_bin = [r for r in candidates if yaw_bin(r.yaw_deg, edges) == b and r.image is not None]
        in_bin.sort(key=lambda r: (-r.score, r.index))
        for r in in_bin[:per_bin]:
            r.status = "kept"
            kept.append(r)
    for r in candidates:
        if r.status == "not selected":
            r.reason = f"yaw bin {yaw_bin(r.yaw_deg, edges)} had {per_bin} better frames"
    return sorted(kept, key=lambda r: r.index)
