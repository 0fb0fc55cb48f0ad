"""Atomic file output and image reading. Every file the project writes goes through here."""
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_target(path):
    """A temporary file beside `path` (same filesystem, so os.replace is atomic), mode 0666 & ~umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return path, Path(tmp)


def ensure_writable_dir(path):
    """Check, before any work, that the folder `path` can be created (when missing) and written in.
    Nothing is left behind: folders made for the check are removed again (the outputs make them).
    Raises InputError with the reason (a file in the way, no permission, a read-only or virtual file
    system)."""
    p = Path(path).absolute()
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    try:
        if p.exists() and not p.is_dir():
            raise InputError(f"{p} is a file, not a folder: give another output folder")
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".facefit-write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot create the output folder {p}: part of its path is a file") from None
    except OSError as e:
        raise InputError(f"cannot write to the output folder {p}: {e.strerror or e}") from None
    finally:
        for d in missing:  # deepest first
            try:
                d.rmdir()
            except OSError:
                pass
    return p


def write_bytes_atomic(path, data: bytes):
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path, tmp = _atomic_target(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str):
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj, indent=2):
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def save_npz_atomic(path, compressed=False, **arrays):
    """np.savez to `path` atomically (uncompressed by default: loads fast)."""
    path, tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_image_atomic(path, image):
    """Write an (H, W, 3) uint8 RGB or (H, W) uint8/uint16 image; the format follows the suffix."""
    import cv2

    path = Path(path)
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix or ".png", img)
    if not ok:
        raise InputError(f"cannot encode an image as '{path.suffix}' for {path}")
    write_bytes_atomic(path, buf.tobytes())


def read_image(path):
    """Read a photo as (H, W, 3) uint8 RGB. Raises InputError with a one-line reason."""
    import cv2

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image file")
    if not path.exists():
        raise InputError(f"{path} does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    with quiet_native_stderr():  # libpng warns on fd 2 about harmless colour-profile quirks
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"{path} is not a readable image (expected JPEG, PNG, BMP, TIFF or WebP)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native libraries print to file descriptor 2 (MediaPipe's glog and TFLite while graphs start,
    libpng and FFmpeg warnings) for the duration of the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
