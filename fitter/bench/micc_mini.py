"""A MICC-layout mini dataset made from ../shared/data, for the tests and the video benchmark.

Each subject is a real scan (Fran with its own texture; MeshMonk's and Lee Perry-Smith's untextured
scans in a uniform skin tone), a skin-textured subject (a scan registered to the model by T-ICP — its
shape in the model's topology and UV chart — wearing the UV texture of a real photo's fit: real skin,
SKIN_PHOTOS; its truth the registered mesh) or a synthetic ICT identity with the painted albedo and known
truth, filmed as a turning head (yaw ±55°, some pitch and roll) in the three MICC settings with falling face size and
quality, written as raw MJPEG streams (concatenated JPEGs, as MICC ships them):

| setting | face width | degradation |
|---|---|---|
| Indoor-Cooperative | ≈260 px | JPEG q 90 |
| PTZ-Indoor | ≈120 px | Gaussian blur σ 0.8 px, noise σ 3, warm cast, JPEG q 70 |
| PTZ-Outdoor | ≈80 px | blur σ 1.2 px, noise σ 5, cool cast, JPEG q 50 |

Every 5th frame (2, 7, 12, ...) is motion-blurred (a horizontal streak of a tenth of the face width). Layout:
`subject_XX/Video/<Setting>.mjpg`, `subject_XX/Model/frontal1/obj/<name>.obj` and `frontal2/` (the same
scan moved rigidly: 3° and 5 mm), `gt_landmarks/subject_XX/frontal{1,2}.ljson` (68 points lifted from
the detector onto the scan, GANFit's format), and `truth.json` (what each subject is; the synthetic
identity's coefficients). Optionally a subject whose video is corrupt and one with no scans.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import MODEL_TO_OPENCV, Camera, intrinsics, rotation_matrix
from ..geometry.mesh import write_obj
from ..geometry.render import get_renderer
from ..io import write_bytes_atomic, write_json_atomic
from ..photo.texture import texture_at_pixels
from ..registration.scan import render_colors
from .common import SCANS, load_gt_scan

SETTINGS = ("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor")
FACE_WIDTH_MM = 150.0
FOCAL_PX = 800.0
SIZE = (640, 480)


@dataclass
class Quality:
    face_px: float
    blur_px: float
    noise: float
    cast: tuple
    jpeg: int


QUALITY = {"Indoor-Cooperative": Quality(260, 0.0, 1.0, (1.0, 1.0, 1.0), 90),
           "PTZ-Indoor": Quality(120, 0.8, 3.0, (1.06, 1.0, 0.9), 70),
           "PTZ-Outdoor": Quality(80, 1.2, 5.0, (0.9, 1.0, 1.1), 50)}
SYNTHETIC_SEED = 4242
SKIN_PHOTOS = {"scan-meshmonk": "whitehouse_obama.jpg", "scan-fran": "skimage_astronaut.png",
               "scan-leeperrysmith": "whitehouse_biden.jpg"}  # whose skin each registered scan wears
SKIN_TEXTURE_PX = 1024


def head_motion(n, max_yaw=55.0):
    """(yaw, pitch, roll) degrees per frame: one full turn left and right, pitch and roll slower."""
    s = np.arange(n) / max(n, 1)
    return (max_yaw * np.sin(2 * np.pi * s), 8.0 * np.sin(4 * np.pi * s + 0.5), 4.0 * np.sin(2 * np.pi * s + 1.0))


def _background(rng, size):
    import cv2

    W, H = size
    small = rng.uniform(0.15, 0.75, (6, 8, 3)).astype(np.float32)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _degrade(img, q: Quality, rng, streak_px):
    """Float RGB [0,1] -> JPEG bytes with the setting's blur, noise, cast (and a motion streak)."""
    import cv2

    out = img * np.asarray(q.cast, np.float32)
    if q.blur_px > 0:
        out = cv2.GaussianBlur(out, (0, 0), q.blur_px)
    if streak_px >= 2:
        k = np.zeros((int(streak_px), int(streak_px)), np.float32)
        k[int(streak_px) // 2, :] = 1.0 / int(streak_px)
        out = cv2.filter2D(out, -1, k)
    out = out * 255 + rng.normal(0, q.noise, out.shape)
    bgr = cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q.jpeg])[1].tobytes()


class _Subject:
    """Something to film: a mesh with colours (per vertex, or a UV texture: uv (U, 2), uv_faces (F, 3) a
    row per triangle of F, texture (T, T, 3) uint8), the rotation from its frame to a y-up, z-forward face
    frame and the point the camera aims at."""

    def __init__(self, V, F, colors, R_face, center, uv=None, uv_faces=None, texture=None):
        self.V, self.F, self.colors, self.R_face, self.center = V, F, colors, R_face, center
        self.uv, self.uv_faces, self.texture = uv, uv_faces, texture

    def render(self, cam, light):
        """(H, W, 3) float colours and the render result: Lambert light times the colours."""
        if self.texture is None:
            r = get_renderer().render(self.V, self.F, cam, vertex_colors=self.colors, light_dir=light)
            return r.color, r
        grey = np.full((len(self.V), 3), 0.5)  # the Lambert factor at half scale (no clipping at 1)
        r = get_renderer().render(self.V, self.F, cam, vertex_colors=grey, light_dir=light)
        albedo = texture_at_pixels(r, self.uv, self.uv_faces, self.texture)
        return np.clip(albedo * r.color * 2.0, 0, 1), r

    def camera(self, yaw, pitch, roll, distance, drift):
        R = MODEL_TO_OPENCV @ rotation_matrix(yaw, pitch, roll) @ self.R_face
        t = np.array([drift[0], drift[1], distance]) - R @ self.center
        return Camera(intrinsics(FOCAL_PX, *SIZE), R, t, *SIZE)


def film_cameras(subject: _Subject, setting, seconds, fps):
    """The camera of each frame of `film` (the subject's frame -> the frame's camera): the head's motion,
    the setting's distance and a slow drift."""
    n = int(round(seconds * fps))
    distance = FOCAL_PX * FACE_WIDTH_MM / QUALITY[setting].face_px
    cams = []
    for k, (yaw, pitch, roll) in enumerate(zip(*head_motion(n))):
        drift = 0.08 * distance * np.array([np.sin(0.7 * k / fps), 0.5 * np.cos(0.5 * k / fps)])
        cams.append(subject.camera(yaw, pitch, roll, distance, drift))
    return cams


def film(subject: _Subject, path, setting, seconds, fps, seed):
    """Write the turning-head video of `subject` in `setting` as a raw MJPEG stream at `path`."""
    rng = np.random.default_rng(seed)
    q = QUALITY[setting]
    cams = film_cameras(subject, setting, seconds, fps)
    n = len(cams)
    bg = _background(rng, SIZE)
    light = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.0), -1.0)
    chunks = []
    for k, cam in enumerate(cams):
        color, r = subject.render(cam, light)
        img = np.where(r.mask[..., None], color, bg).astype(np.float32)
        streak = q.face_px / 10 if k % 5 == 2 else 0
        chunks.append(_degrade(img, q, rng, streak))
    write_bytes_atomic(path, b"".join(chunks))
    return n


def _scan_subject(data_dir, folder, mesh, texture, arbitrary):
    scan, frame = load_gt_scan(Path(data_dir), folder, mesh, texture, arbitrary)
    return scan, frame, _Subject(scan.V, scan.F, render_colors(scan), frame.R, frame.nose_tip)


def skin_subject(prepared, data_dir, folder, mesh, texture, arbitrary, photo):
    """A scan's shape with a real person's skin: the scan registered to the model (T-ICP: the scan in the
    model's topology and UV chart, fitter.registration.register.register_scan) and textured with the UV texture of a
    real photo's fit (fitter.photo.pipeline.fit_photo: the photo where it sees the face). Returns (registered
    vertices (N, 3) mm in the scan's frame, face frame, _Subject)."""
    from ..photo.pipeline import fit_photo
    from ..registration.register import register_scan

    model = prepared.model
    scan, frame = load_gt_scan(Path(data_dir), folder, mesh, texture, arbitrary)
    reg, _ = register_scan(prepared, scan, frame=frame)
    fit = fit_photo(Path(data_dir) / "photos" / photo, prepared, stages=("coarse",), texture_size=SKIN_TEXTURE_PX)[0]
    drawn = model.region_mask("render")[model.faces].all(1) if "render" in model.regions else slice(None)
    return reg.vertices, frame, _Subject(reg.vertices, prepared.render_faces, None, frame.R, frame.nose_tip,
                                         model.uv, model.uv_faces[drawn], fit.texture_image)


def _synthetic_subject(prepared, seed):
    model = prepared.model
    alpha, _ = model.random_coefficients(np.random.default_rng(seed))
    V = model.shape(alpha, np.zeros(model.n_expression))
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    return alpha, V, _Subject(V, prepared.render_faces, prepared.painted_albedo, np.eye(3), V[ref[30]] - [0, 0, 30.0])


def write_gt_landmarks(path, landmarks_68):
    """A scan's 68 ground-truth landmarks (68, 3) as GANFit's .ljson (what fitter.datasets.micc reads)."""
    write_json_atomic(path, {"landmarks": {"points": np.round(landmarks_68, 4).tolist()},
                             "labels": [{"label": "ibug68", "mask": list(range(68))}]})


def _write_scan(root, subject_id, name, V, F, landmarks_68):
    """frontal1 = the scan, frontal2 = the same scan moved rigidly; with GANFit-style .ljson landmarks."""
    R2 = rotation_matrix(3.0, -2.0, 1.0)
    t2 = np.array([5.0, -3.0, 2.0])
    for k, (Vk, Lk) in enumerate(((V, landmarks_68), (V @ R2.T + t2, landmarks_68 @ R2.T + t2)), start=1):
        write_obj(root / subject_id / "Model" / f"frontal{k}" / "obj" / f"{name}_frontal{k}.obj", Vk, F)
        write_gt_landmarks(root / "gt_landmarks" / subject_id / f"frontal{k}.ljson", Lk)


def build_mini_micc(root, prepared, data_dir, seconds=10.0, fps=25.0, settings=SETTINGS,
                    scans=tuple(s[0] for s in SCANS), synthetic=True, corrupt=True, scanless=True,
                    skin=tuple(s[0] for s in SCANS), log=print):
    """Write the mini dataset under `root` (see the module docstring): a subject per scan folder named in
    `scans` (those found in data_dir), a skin-textured subject per scan folder named in `skin` (the scan
    registered to the model and wearing a real photo's skin), the synthetic one, the scanless and the
    corrupt ones as asked. Returns truth.json's dict."""
    root = Path(root)
    truth, k = {}, 0

    def next_id():
        nonlocal k
        k += 1
        return f"subject_{k:02d}"

    def film_all(sid, subject, seed):
        for j, setting in enumerate(settings):
            film(subject, root / sid / "Video" / f"{setting}.mjpg", setting, seconds, fps, seed + j)

    for folder, mesh, texture, arbitrary in SCANS:
        if folder not in (scans or ()):
            continue
        if not (Path(data_dir) / folder / mesh).is_file():
            log(f"skipping {folder}: not found")
            continue
        scan, frame, subject = _scan_subject(data_dir, folder, mesh, texture, arbitrary)
        sid = next_id()
        _write_scan(root, sid, folder, scan.V, scan.F, lmk.to_68(np.nan_to_num(frame.landmarks)))
        film_all(sid, subject, 100 * k)
        truth[sid] = {"kind": "scan", "source": folder, "textured": texture is not None}
        log(f"{sid}: {folder}")
    model = prepared.model
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    F_scan = model.faces_in("outer_skin")
    for folder, mesh, texture, arbitrary in SCANS:
        photo = SKIN_PHOTOS.get(folder)
        if folder not in (skin or ()) or photo is None:
            continue
        if not (Path(data_dir) / folder / mesh).is_file() or not (Path(data_dir) / "photos" / photo).is_file():
            log(f"skipping the skin subject of {folder}: its scan or {photo} not found")
            continue
        V, frame, subject = skin_subject(prepared, data_dir, folder, mesh, texture, arbitrary, photo)
        sid = next_id()
        _write_scan(root, sid, f"skin-{folder.removeprefix('scan-')}", V, F_scan, V[ref])
        film_all(sid, subject, 100 * k)
        truth[sid] = {"kind": "skin", "source": folder, "photo": photo, "model": model.name}
        log(f"{sid}: {folder} registered, with the skin of {photo}")
    if synthetic:
        alpha, V, subject = _synthetic_subject(prepared, SYNTHETIC_SEED)
        sid = next_id()
        _write_scan(root, sid, "synthetic", V, F_scan, V[ref])
        film_all(sid, subject, 100 * k)
        truth[sid] = {"kind": "synthetic", "model": model.name, "identity": alpha.round(8).tolist()}
        log(f"{sid}: synthetic ICT identity")
    if scanless:
        alpha, V, subject = _synthetic_subject(prepared, SYNTHETIC_SEED + 1)
        sid = next_id()
        film_all(sid, subject, 100 * k)
        truth[sid] = {"kind": "no scans"}
    if corrupt:
        alpha, V, _ = _synthetic_subject(prepared, SYNTHETIC_SEED + 2)
        sid = next_id()
        _write_scan(root, sid, "corrupt", V, F_scan, V[ref])
        write_bytes_atomic(root / sid / "Video" / f"{settings[0]}.mjpg", b"\xff\xd8\xff\xe0 not a video " * 200)
        truth[sid] = {"kind": "corrupt video"}
    write_json_atomic(root / "truth.json", truth)
    return truth
