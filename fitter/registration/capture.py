"""A capture — an RGB-D pair or a 3D scan — read, registered and recorded, so that a registration folder can
be turned back into its capture (for augmentation, fitter.augment) without the command line that made it.

A capture is described by a `CaptureSpec`, written by `facefit register` as capture.json beside the
registration:
- `{"kind": "rgbd", "color": PATH, "depth": PATH, "intrinsics": PATH, "depth_scale": 1.0}`
- `{"kind": "scan", "scan": PATH, "units": "mm"|null, "texture": PATH|null, "camera": {K, R, t, width, height}}`
  (the virtual camera through which the scan was registered: its view is the capture's colour and depth).

Paths are absolute. `RegisteredCapture` is a capture's colour, depth, K and registration, all in the
capture's camera frame (mm), as the augmentation takes them.
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.camera import Camera

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_EXTENSIONS = (".png", ".npy", ".exr", ".tif", ".tiff")
SCAN_EXTENSIONS = (".obj", ".ply", ".vtk", ".glb", ".gltf", ".off", ".stl")


@dataclass
class CaptureSpec:
    kind: str                   # "rgbd" or "scan"
    color: str = None
    depth: str = None
    intrinsics: str = None
    depth_scale: float = 1.0
    scan: str = None
    units: str = None
    texture: str = None
    camera: dict = None         # a scan's virtual camera, once registered

    def to_dict(self):
        return {k: v for k, v in asdict(self).items() if v is not None}

    def read_scan(self, notes=None):
        """The scan of a scan capture (fitter.registration.scan.Scan, mm), its texture applied; `notes` (a list) receives
        the reader's warnings."""
        from .scan import read_scan, texture_colors

        scan = read_scan(self.scan, self.units)
        if notes is not None:
            notes.extend(scan.notes)
        if self.texture:
            scan.colors = texture_colors(scan, self.texture)
        return scan

    def read_rgbd(self):
        """(color (H, W, 3) uint8, depth (H, W) float32 mm, K (3, 3)) of an RGB-D capture."""
        from ..io import read_image
        from .register import read_depth, read_intrinsics

        return read_image(self.color), read_depth(self.depth, self.depth_scale), read_intrinsics(self.intrinsics)

    def scan_camera(self):
        """The Camera through which a scan capture was registered (recorded in `camera`)."""
        c = self.camera or {}
        try:
            return Camera(np.asarray(c["K"], float), np.asarray(c["R"], float), np.asarray(c["t"], float),
                          int(c["width"]), int(c["height"]))
        except KeyError as e:
            raise InputError(f"the capture record's scan camera lacks {e}: register the scan again") from e

    @staticmethod
    def from_dict(d):
        fields = {k: d.get(k) for k in ("kind", "color", "depth", "intrinsics", "scan", "units", "texture", "camera")}
        if fields["kind"] not in ("rgbd", "scan"):
            raise InputError(f"capture record: kind must be 'rgbd' or 'scan', got {fields['kind']!r}")
        return CaptureSpec(depth_scale=float(d.get("depth_scale", 1.0)), **fields)

    @staticmethod
    def rgbd(color, depth, intrinsics, depth_scale=1.0):
        return CaptureSpec("rgbd", str(Path(color).resolve()), str(Path(depth).resolve()),
                           str(Path(intrinsics).resolve()), float(depth_scale))

    @staticmethod
    def of_scan(scan, units=None, texture=None):
        return CaptureSpec("scan", scan=str(Path(scan).resolve()), units=units,
                           texture=str(Path(texture).resolve()) if texture else None)


def find_capture(folder):
    """The CaptureSpec of a capture folder: `color.*` + `depth.*` + `intrinsics.json` (depth in mm, or
    `depth_scale` in intrinsics.json), or exactly one scan file (with an optional `texture.*`). Raises
    InputError saying what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    by_stem = lambda stem, exts: [p for p in files if p.stem == stem and p.suffix.lower() in exts]  # noqa: E731
    color, depth = by_stem("color", IMAGE_EXTENSIONS), by_stem("depth", DEPTH_EXTENSIONS)
    intr = folder / "intrinsics.json"
    if color or depth:
        if not (color and depth and intr.is_file()):
            raise InputError(f"{folder}: an RGB-D capture needs color.*, depth.* and intrinsics.json "
                             f"(found: {', '.join(p.name for p in files) or 'nothing'})")
        try:
            scale = float(json.loads(intr.read_text()).get("depth_scale", 1.0))
        except (ValueError, OSError, AttributeError) as e:
            raise InputError(f"{intr}: cannot read intrinsics JSON ({e})") from e
        return CaptureSpec.rgbd(color[0], depth[0], intr, scale)
    scans = [p for p in files if p.suffix.lower() in SCAN_EXTENSIONS]
    if len(scans) != 1:
        raise InputError(f"{folder}: expected color.* + depth.* + intrinsics.json or one scan file, "
                         f"found {len(scans)} scan files among {len(files)} files")
    texture = [p for p in files if p.stem == "texture" and p.suffix.lower() in IMAGE_EXTENSIONS]
    return CaptureSpec.of_scan(scans[0], texture=texture[0] if texture else None)


@dataclass
class RegisteredCapture:
    """A registered capture in its camera frame (mm) — what augmentation starts from."""

    name: str
    color: np.ndarray        # (H, W, 3) uint8
    depth: np.ndarray        # (H, W) float32 mm, 0 = missing
    K: np.ndarray            # (3, 3) px
    vertices: np.ndarray     # (N, 3) the registration (model topology), camera frame, mm
    scale: float             # V = scale R (mean + s_morph) + t (S1 Eq. 7), camera frame
    R: np.ndarray            # (3, 3)
    t: np.ndarray            # (3,) mm
    s_morph: np.ndarray      # (N, 3) mm, model frame
    identity: np.ndarray     # (P,) the coarse fit's coefficients
    expression: np.ndarray   # (E,)
    report: dict             # report.json: inliers, residuals, landmark error
    s_morph_ref: str = None  # "s_morph.npz sha256:…" of the registration folder, when read from one

    @staticmethod
    def of(prepared, name, color, depth, K, reg, V_cam=None):
        """From a Registration `reg` (fitter.registration.register) of the capture (color, depth, K); V_cam: its vertices
        in the camera frame when reg's are not (a scan's)."""
        from .register import split_similarity

        V = np.asarray(reg.vertices if V_cam is None else V_cam, float)
        f, R, t, S = split_similarity(prepared.model, V)
        return RegisteredCapture(name, color, np.asarray(depth, np.float32), np.asarray(K, float), V, f, R, t, S,
                                 reg.identity, reg.expression, reg.report)


def register_capture(prepared, spec: CaptureSpec, settings=None, use_color=True, notes=None):
    """Read and register a capture. Returns (Registration in the capture's own frame — the camera for RGB-D,
    the scan's for a scan —, RegisteredCapture in the camera frame, the spec completed with a scan's
    virtual camera). `notes`: a list that receives the scan reader's warnings."""
    from .register import register_rgbd, register_scan

    if spec.kind == "scan":
        reg, cam = register_scan(prepared, spec.read_scan(notes), settings, use_color=None if use_color else False)
        V_cam = cam.to_camera(reg.vertices)
        color, depth, K = reg.view, reg.view_depth, cam.K
        spec = CaptureSpec(**{**spec.to_dict(), "camera": camera_dict(cam)})
    else:
        color, depth, K = spec.read_rgbd()
        reg = register_rgbd(prepared, color, depth, K, settings, use_color=use_color)
        V_cam = reg.vertices
    name = Path(spec.scan if spec.kind == "scan" else spec.color).parent.name
    return reg, RegisteredCapture.of(prepared, name, color, depth, K, reg, V_cam), spec


def camera_dict(cam: Camera):
    return {"K": cam.K.tolist(), "R": cam.R.tolist(), "t": cam.t.tolist(), "width": cam.width, "height": cam.height}


REGISTRATION_FILES = ("s_morph.npz", "capture.json", "report.json")  # what `facefit register` writes, in part


def read_registration(model, reg_dir):
    """(s_morph.npz's arrays, CaptureSpec, report) of a folder written by `facefit register`, checked
    against `model` (the MorphableModel it must have been registered with). Reads no image. Raises
    InputError when something is missing or damaged, or the folder was registered with another model."""
    d = Path(reg_dir)
    if not d.is_dir():
        raise InputError(f"{d}: no such folder; give a folder written by 'facefit register'")
    for f in REGISTRATION_FILES:
        if not (d / f).is_file():
            hint = " (registered by an older facefit: register it again)" if f == "capture.json" else ""
            raise InputError(f"{d}: no {f}; give a folder written by 'facefit register'{hint}")
    z = _read_npz(d / "s_morph.npz", ("s_morph", "f", "R", "t", "model", "model_sha256"))
    capture_record, report = _read_json(d / "capture.json"), _read_json(d / "report.json")
    if str(z["model"]) != model.name or str(z["model_sha256"]) != str(model.metadata.get("model_sha256")):
        raise InputError(f"{d}: registered with model {z['model']} ({str(z['model_sha256'])[:12]}), not with the "
                         f"loaded {model.name} ({str(model.metadata.get('model_sha256'))[:12]}): pass --model")
    spec = CaptureSpec.from_dict(capture_record)
    if (z["s_morph"].shape != model.mean.shape or np.shape(z["R"]) != (3, 3) or np.shape(z["t"]) != (3,)
            or np.size(z["f"]) != 1):
        raise InputError(f"{d / 's_morph.npz'}: arrays of the wrong shape for {model.name} "
                         f"(s_morph {z['s_morph'].shape}); register the capture again")
    return z, spec, report


def load_registered_capture(prepared, reg_dir, name=None):
    """The RegisteredCapture of a folder written by `facefit register` (registered.obj, s_morph.npz,
    report.json, capture.json): the capture re-read from where capture.json says it came from (a scan
    re-rendered through its recorded camera). Raises InputError when something is missing or the folder
    was registered with another model (`read_registration`)."""
    from ..model.store import sha256_file
    from .register import split_similarity
    from .scan import render_scan

    d = Path(reg_dir)
    model = prepared.model
    z, spec, report = read_registration(model, d)
    f, R, t, S = float(z["f"]), z["R"], z["t"], z["s_morph"].astype(np.float64)
    V = f * (model.mean + S) @ R.T + t  # the registration in its own frame (S1 Eq. 7)
    if spec.kind == "scan":
        cam = spec.scan_camera()
        res = render_scan(spec.read_scan(), cam)  # the registration's own view of it (register_scan's render)
        color, depth, K = res.color_uint8(), res.depth.astype(np.float32), cam.K
        V = cam.to_camera(V)
    else:
        color, depth, K = spec.read_rgbd()
    f, R, t, S = split_similarity(model, V)
    get = lambda k: z[k].astype(np.float64) if k in z else None  # noqa: E731
    ref = f"{(d / 's_morph.npz').resolve()} sha256:{sha256_file(d / 's_morph.npz')}"
    return RegisteredCapture(name or d.name, color, depth, np.asarray(K, float), V, f, R, t, S, get("identity"),
                             get("expression"), report, ref)


def _read_npz(path, required):
    """The arrays of an .npz as a dict (all read now). Raises InputError for a damaged file or missing keys."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, ValueError, OSError: one message for a damaged file
        raise InputError(f"{path}: damaged or not an .npz ({type(e).__name__}); register the capture again") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise InputError(f"{path}: lacks {', '.join(missing)}; register the capture again")
    return out


def _read_json(path):
    """A JSON object from a file. Raises InputError for a damaged one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: damaged or not JSON ({type(e).__name__}); register the capture again") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a JSON object; register the capture again")
    return doc
