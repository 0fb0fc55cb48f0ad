"""Frame sources: a video file read with OpenCV (raw MJPEG streams `.mjpg`/`.mjpeg` as MICC ships them,
`.avi`, `.mp4`, `.mpg`, anything FFmpeg reads) or a folder of images, scanned with a stride.

Frames come out as (H, W, 3) uint8 RGB with their index in the source and their time (s); a frame that
cannot be decoded (a damaged file in a folder, a damaged JPEG in a stream) comes out without an image and
with the reason, so that it is recorded and skipped, not fatal.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..io import quiet_native_stderr, read_image

VIDEO_EXTENSIONS = (".mjpg", ".mjpeg", ".avi", ".mp4", ".mpg", ".mpeg", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FOLDER_FPS = 25.0  # the frame rate a folder of frames is taken to have (only for the times reported)
SCAN_FPS = 6.0     # the automatic stride scans this many frames per second of video


@dataclass
class Frame:
    index: int          # position in the source (0-based, before the stride)
    time_s: float       # index / fps
    image: Optional[np.ndarray]   # (H, W, 3) uint8 RGB; None when the frame could not be decoded
    error: str = ""               # why it could not be decoded


def is_video_source(path):
    """True for a folder or a file with a video extension."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in VIDEO_EXTENSIONS


def read_frames(source, stride=None):
    """Yield every `stride`-th Frame of a video file or an image folder (sorted by name); stride None:
    about SCAN_FPS frames per second of video (every frame of a folder).

    A frame that cannot be decoded is yielded with image None and its `error`. Raises InputError when the
    source is missing, not a video, or yields no decodable frame."""
    p = Path(source)
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if stride is not None and stride < 1:
        raise InputError(f"the frame stride must be at least 1, got {stride}")
    frames = _folder_frames(p, stride) if p.is_dir() else _video_frames(p, stride)
    decoded = bad = 0
    for frame in frames:
        decoded += frame.image is not None
        bad += frame.image is None
        yield frame
    if decoded == 0:
        raise InputError(f"{p}: no frame could be decoded" + (f" ({bad} damaged)" if bad else "")
                         + (" (corrupt or empty video, or an unsupported codec)" if p.is_file() else ""))


def _folder_frames(folder, stride):
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    for i in range(0, len(files), stride or 1):
        try:
            yield Frame(i, i / FOLDER_FPS, read_image(files[i]))
        except InputError as e:
            yield Frame(i, i / FOLDER_FPS, None, str(e))


def _video_frames(path, stride):
    import cv2

    with quiet_native_stderr():  # FFmpeg prints its probing complaints on fd 2
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise InputError(f"{path} is not a readable video (OpenCV/FFmpeg cannot open it)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if np.isfinite(fps) and 1.0 <= fps <= 1000.0 else FOLDER_FPS
    stride = stride or max(1, int(round(fps / SCAN_FPS)))
    try:
        i = 0
        while True:
            with quiet_native_stderr():  # a damaged JPEG inside a stream: skipped with a warning on fd 2
                ok = cap.grab()
                if not ok:
                    return
                if i % stride:
                    i += 1
                    continue
                ok, bgr = cap.retrieve()
            if ok and bgr is not None and bgr.ndim == 3:
                yield Frame(i, i / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            else:
                yield Frame(i, i / fps, None, "the frame could not be decoded")
            i += 1
    finally:
        cap.release()
