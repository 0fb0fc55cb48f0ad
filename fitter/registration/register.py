"""RGB-D (or scan) registration of the face model: landmarks → coarse fit lifted onto the depth →
T-ICP (texture-constrained optimal-step NICP, `fitter.registration.nicp`) → S1 Eq. 7 split into a similarity
(f, R, t) and the non-rigid residual S_morph in the model's mean frame.

Texture model. S1 fits a PCA texture model with Phong lighting (Eq. 3–5) so that the template has a
colour where the capture has one (brows dark, lips red) before it knows the correspondence. ICT has no
texture model, so the template's albedo here is its part map (skin, brows, lips, eyes: the painting
used to build the landmark embedding) with one colour per part — the texture parameters — fitted to
the image together with Phong lighting by Levenberg–Marquardt (`fitter.photo.texture.fit_phong`), and refitted
between stiffness steps on the current registration.
"""
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..detection import landmarks as lmk
from ..errors import InputError, NoFaceError, one_line
from ..geometry.align import similarity_transform
from ..geometry.camera import MODEL_TO_OPENCV, Camera, intrinsics, pinhole_matrix
from ..geometry.closest import MeshQuery
from ..geometry.mesh import boundary_vertices, face_normals, interpolate, submesh, vertex_normals, write_obj
from ..geometry.render import depth_visible
from ..io import save_npz_atomic, write_image_atomic, write_json_atomic
from ..photo.coarse import fit_landmarks
from ..photo.overlay import face_overlay
from ..photo.texture import fit_phong, phong_shade, sample_image
from .evaluate import crop
from .nicp import NicpSettings, NicpSystem, Target, nicp
from .scan import FaceFrame, find_face_frame, render_scan

DEPTH_EDGE_MM = 10.0       # a jump larger than this (or 3 % of the depth) between neighbours is an edge
DEPTH_EDGE_FRACTION = 0.03
MIN_DEPTH_MM, MAX_DEPTH_MM = 100.0, 5000.0
PLAUSIBLE_OUTER_IOD_MM = (60.0, 130.0)  # a scan whose eye corners are not this far apart is not in mm
ADULT_OUTER_IOD_MM = 90.0
LIFT_RESIDUAL_MAX_MM = 8.0  # median distance of the lifted landmarks to the depth (measured: faces 1.4-2.3 mm)
MIN_NOSE_RELIEF_MM = 8.0    # the nose tip in front of the mean of the eye corners (adults: 20-35 mm)


# --- inputs -----------------------------------------------------------------------------------------
def read_intrinsics(path):
    """K (3, 3) from a JSON file holding {"fx", "fy", "cx", "cy"} or {"K": [[...], [...], [...]]}."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read intrinsics JSON ({e.__class__.__name__}: {e})") from e
    try:
        if isinstance(d, dict) and "K" in d:
            K = np.asarray(d["K"], float)
            if K.shape != (3, 3):
                raise InputError(f"{path}: \"K\" must be a 3x3 matrix, got shape {K.shape}")
        elif isinstance(d, dict) and all(k in d for k in ("fx", "fy", "cx", "cy")):
            K = pinhole_matrix(d["fx"], d["fy"], d["cx"], d["cy"])
        else:
            raise InputError(f"{path}: give {{\"fx\", \"fy\", \"cx\", \"cy\"}} or {{\"K\": 3x3}} in pixels")
    except (TypeError, ValueError):
        raise InputError(f"{path}: the intrinsics must be numbers (pixels)") from None
    if not ((Camera(K).focal_xy > 0).all() and np.isfinite(K).all()):
        raise InputError(f"{path}: focal lengths must be positive and finite")
    return K


def read_depth(path, depth_scale=1.0):
    """(H, W) float32 depth in mm (0 = missing) from a 16-bit PNG (mm), .npy or .exr, times depth_scale
    (e.g. 1000 for a file in metres)."""
    p = Path(path)
    if p.is_dir() or not p.exists():
        raise InputError(f"{path}: no such depth file")
    check_depth_scale(depth_scale)
    ext = p.suffix.lower()
    if ext == ".npy":
        try:
            D = np.load(p, allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise InputError(f"{path}: not a numeric .npy array ({one_line(e)})") from None
        if not isinstance(D, np.ndarray) or not (np.issubdtype(D.dtype, np.number) or D.dtype == bool):
            raise InputError(f"{path}: not a numeric .npy array (dtype {getattr(D, 'dtype', type(D).__name__)})")
    elif ext == ".exr":
        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
        import cv2

        D = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_UNCHANGED)
    else:
        import cv2

        D = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_UNCHANGED)
        if D is not None and D.dtype == np.uint8:
            raise InputError(f"{path}: an 8-bit image is not a depth map; give a 16-bit PNG in mm, .npy or .exr")
    if D is None:
        raise InputError(f"{path}: not a readable depth image (16-bit PNG in mm, .npy or .exr)")
    D = np.asarray(D)
    if D.ndim == 3:
        D = D[..., 0]
    if D.ndim != 2:
        raise InputError(f"{path}: depth must be a single-channel image, got shape {D.shape}")
    D = np.nan_to_num(D.astype(np.float32) * float(depth_scale), nan=0.0, posinf=0.0, neginf=0.0)
    D[D < 0] = 0
    return D


def check_depth_scale(depth_scale):
    """The depth scale as a positive finite float. Raises InputError."""
    try:
        value = float(depth_scale)
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"the depth scale must be a positive number (mm per depth unit, e.g. 1000 for metres), "
                         f"got {depth_scale!r}")
    return value


def check_intrinsics(K, color_shape):
    """The principal point must lie in the colour image (H, W, ...): K is for another image otherwise."""
    H, W = color_shape[:2]
    cx, cy = Camera(K).principal_point
    if not (0 <= cx <= W - 1 and 0 <= cy <= H - 1):
        raise InputError(f"the principal point ({cx:g}, {cy:g}) px lies outside the {W}x{H} colour image: give the "
                         f"intrinsics of this image, in its pixels")


def check_depth(depth, color_shape):
    """Clear errors for the usual mistakes: size mismatch, empty depth, wrong units."""
    H, W = color_shape[:2]
    if depth.shape != (H, W):
        raise InputError(f"depth is {depth.shape[1]}x{depth.shape[0]} but the colour image is {W}x{H}: "
                         f"give a depth map registered to the colour image")
    valid = depth > 0
    if valid.mean() < 0.01:
        raise InputError("the depth map is empty (fewer than 1 % valid pixels)")
    med = float(np.median(depth[valid]))
    if med < MIN_DEPTH_MM or med > MAX_DEPTH_MM:
        hint = " (looks like metres: pass --depth-scale 1000)" if med < 10 else ""
        raise InputError(f"median depth {med:.3g} is not a plausible distance in mm{hint}; "
                         f"use --depth-scale to convert to mm")


def depth_target(depth, camera: Camera, color=None, stride=1):
    """Target points (camera frame, mm) of every valid depth pixel (the depth seen by `camera`, its
    intrinsics), with normals from the depth
    gradients, colours from the registered colour image, and boundary flags (pixels next to a hole,
    the image border or a depth discontinuity: flying pixels live there)."""
    D = np.asarray(depth, np.float32)[::stride, ::stride]
    H, W = D.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64) * stride
    rays = camera.rays(np.stack([u, v], -1))
    P = rays * D[..., None]
    valid = D > 0
    # normals: cross product of central differences (towards the camera)
    dx = np.zeros_like(P)
    dy = np.zeros_like(P)
    dx[:, 1:-1] = P[:, 2:] - P[:, :-2]
    dy[1:-1] = P[2:] - P[:-2]
    N = np.cross(dy, dx)
    N /= np.maximum(np.linalg.norm(N, axis=-1, keepdims=True), 1e-12)
    N[N[..., 2] > 0] *= -1
    # boundary: invalid or far-away 4-neighbour, or the image border
    pad = np.pad(D, 1)
    jump = np.zeros_like(valid)
    tol = np.maximum(DEPTH_EDGE_MM, DEPTH_EDGE_FRACTION * D)
    for dy_, dx_ in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[dy_:dy_ + H, dx_:dx_ + W]
        jump |= (nb == 0) | (np.abs(nb - D) > tol)
    jump[[0, -1], :] = True
    jump[:, [0, -1]] = True
    idx = np.flatnonzero(valid)
    colors = None
    if color is not None:
        C = np.asarray(color)[::stride, ::stride].reshape(-1, 3)[idx]
        colors = C.astype(np.float64) / (255.0 if C.dtype == np.uint8 else 1.0)
    return Target(P.reshape(-1, 3)[idx], N.reshape(-1, 3)[idx], colors, jump.ravel()[idx]), idx


def depth_at(depth, pts, camera: Camera, window=2, nearest=False):
    """(L, 3) camera-frame points under the pixels `pts` (L, 2): the median valid depth in a
    (2 window + 1)² neighbourhood (nearest: the smallest, for a point that stands out, such as the nose tip
    of a turned face, whose neighbourhood reaches the cheek behind it); NaN where there is none."""
    H, W = depth.shape
    pts = np.asarray(pts, float)
    px = np.rint(pts).astype(int)
    span = np.arange(-window, window + 1)
    ys = np.clip(px[:, 1, None, None] + span[None, :, None], -1, H)
    xs = np.clip(px[:, 0, None, None] + span[None, None, :], -1, W)
    padded = np.pad(depth.astype(np.float64), 1)  # index -1 / H / W land on the zero border
    patch = padded[ys + 1, xs + 1].reshape(len(pts), -1)
    inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
    valid = (patch > 0) & inside[:, None]
    z = np.full(len(pts), np.nan)
    has = valid.any(axis=1)
    with np.errstate(all="ignore"):
        z[has] = (np.nanmin if nearest else np.nanmedian)(np.where(valid[has], patch[has], np.nan), axis=1)
    return z[:, None] * camera.rays(pts)


def crop_target(target: Target, template, margin_mm):
    """The target points within the template's bounding sphere plus a margin (the face's neighbourhood:
    the rest of a capture cannot be a correspondence and only slows the k-d tree)."""
    c = template.mean(axis=0)
    r = float(np.linalg.norm(template - c, axis=1).max()) + margin_mm
    keep = np.linalg.norm(target.points - c, axis=1) <= r
    if keep.sum() < 100:
        raise NoFaceError("the depth map has almost no points where the face is")
    return Target(target.points[keep], target.normals[keep], None if target.colors is None else target.colors[keep],
                  target.boundary[keep])


# --- texture model for T-ICP ---------------------------------------------------------------------
def fit_template_colors(labels, V_cam, normals_cam, image, visible, camera: Camera, iterations=1, sample=600, seed=0,
                        light=None):
    """Template colour (N, 3) in [0, 1] for T-ICP: per-part albedo (the texture parameters) under Phong
    lighting (S1 Eq. 4), fitted to the image at the visible vertices by LM (S1 Eq. 5) on a fixed random
    sample of `sample` of them (the 10 light parameters need no more). light: a PhongLight to start
    from (the previous fit). Returns (colours, light)."""

    img = np.asarray(image, np.float32) / 255.0
    uv = camera.pixels(V_cam)
    obs = np.flatnonzero(visible)
    if len(obs) < 30:
        raise ValueError("fewer than 30 template vertices are visible: cannot fit the texture")
    view = -V_cam / np.linalg.norm(V_cam, axis=1, keepdims=True)
    H, W = img.shape[:2]
    colors_obs = sample_image(img, np.clip(uv[obs], 0, [W - 1, H - 1]))[:, :3]
    n_parts = int(labels.max()) + 1
    part_albedo = np.tile(np.median(colors_obs, axis=0) / 0.8, (n_parts, 1))
    light = None
    for _ in range(iterations):
        sub = obs if len(obs) <= sample else np.sort(np.random.default_rng(seed).choice(obs, sample, replace=False))
        pos = np.searchsorted(obs, sub)
        light, _ = fit_phong(part_albedo[labels[sub]], normals_cam[sub], view[sub], colors_obs[pos], start=light)
        shade = phong_shade(np.ones((len(obs), 3)), normals_cam[obs], view[obs], light)
        for k in range(n_parts):
            m = labels[obs] == k
            if m.sum() >= 5:
                part_albedo[k] = np.median(colors_obs[m] / np.maximum(shade[m], 0.05), axis=0)
        part_albedo = np.clip(part_albedo, 0.0, 1.0)
    return np.clip(phong_shade(part_albedo[labels], normals_cam, view, light), 0.0, 1.0), light


# --- the registration -------------------------------------------------------------------------------
@dataclass
class Registration:
    vertices: np.ndarray          # (N, 3) registered model mesh, camera (or scan) frame, mm
    s_morph: np.ndarray           # (N, 3) non-rigid residual in the model's mean frame, mm
    scale: float                  # f of S1 Eq. 7
    R: np.ndarray                 # (3, 3)
    t: np.ndarray                 # (3,) mm
    coarse_vertices: np.ndarray   # (N, 3) the coarse fit lifted onto the depth, before T-ICP
    report: dict = field(default_factory=dict)
    landmarks: tuple = None       # (face-area vertex ids (L,), targets (L, 3)): the NICP landmark term
    target: Target = None         # what was registered to (camera frame)
    view: np.ndarray = None       # (H, W, 3) uint8: a scan registration's virtual view (the overlay's image)
    view_depth: np.ndarray = None  # (H, W) float32 mm: that view's depth (0 = no scan)
    identity: np.ndarray = None   # (P,) the coarse fit's identity coefficients (the start of T-ICP)
    expression: np.ndarray = None  # (E,) and its expression coefficients


def split_similarity(model, V_regist, region="face"):
    """S1 Eq. 7: (f, R, t, S_morph) with V_regist = f R (mean + S_morph) + t exactly; (f, R, t) is the
    least-squares similarity from the mean shape to the registration over `region`."""
    idx = model.regions.get(region, np.arange(model.n_vertices))
    f, R, t = similarity_transform(model.mean[idx], V_regist[idx])
    S_morph = ((V_regist - t) @ R) / f - model.mean
    return f, R, t, S_morph


def register_rgbd(prepared, color, depth, K, settings: NicpSettings = None, use_color=True, target=None):
    """Register the PreparedModel's model to a colour image (H, W, 3) uint8 and registered depth (H, W) mm
    with intrinsics K. target: optional Target (camera frame) to register to instead of the depth
    pixels (a scan seen by this camera). Raises InputError / NoFaceError."""
    check_depth(depth, color.shape)
    K = np.asarray(K, float)
    check_intrinsics(K, color.shape)
    camera = Camera(K.copy(), width=color.shape[1], height=color.shape[0])
    prepared.require_embedding()
    settings = settings or NicpSettings()
    t0 = time.perf_counter()
    area = prepared.face_area  # once per model (face-area tables, landmark basis): not a capture's time
    prepared.landmark_basis
    prepared.nicp_topology(settings.gamma)
    times = {"model_prepare_s": time.perf_counter() - t0}
    t_all = time.perf_counter()
    face, V_fit, identity, expression = _detect_and_fit(prepared, color, camera, times)
    lift = _lift_onto_depth(prepared, face, V_fit, depth, camera, times)
    V0 = lift.vertices
    # target
    t0 = time.perf_counter()
    if target is None:
        target, _ = depth_target(depth, camera, color)
    target = crop_target(target, V0[area.domain], margin_mm=0.3 * lift.iod_mm)
    times["target_s"] = time.perf_counter() - t0
    # template: the face area; landmark term: inner landmark vertices -> depth points
    F_face, dom = area.F_local, area.domain
    lv_all = area.vertex_of_landmark[lift.inner]
    use = lift.keep & (lv_all >= 0)
    lv, lt = lv_all[use], lift.depth_points[use]
    lv, first = np.unique(lv, return_index=True)
    lt = lt[first]
    system = NicpSystem(V0[dom], F_face, settings.gamma, prepared.nicp_topology(settings.gamma))
    colours = _TemplateColours(prepared, V0, color, depth, camera) if use_color else None
    t0 = time.perf_counter()
    colors0 = colours(V0[dom]) if use_color else None
    times["texture_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = nicp(V0[dom], F_face, target, lift.iod_mm, settings, lv, lt, colors0, colours, system)
    times["nicp_s"] = time.perf_counter() - t0
    V = V0 + area.extend(res.vertices - V0[dom])
    f, R, t, S_morph = split_similarity(prepared.model, V)
    times["total_s"] = time.perf_counter() - t_all  # the capture's registration, model preparation apart
    report = _report(res, use_color, lv, lift, target, dom, times)
    uv, iod = _landmarks_px(prepared, V, camera, R), lmk.outer_interocular(face.points)
    report["landmark_error_iod"] = round(landmark_error_iod(prepared, uv, face.points, iod), 5)
    report["lift_residual_mm"] = round(float(times["lift_residual_mm"]), 4)
    report["drift_iod"] = round(landmark_error_iod(prepared, uv, _landmarks_px(prepared, V_fit, camera), iod), 5)
    return Registration(V, S_morph, f, R, t, V0, report, (lv, lt), target, identity=identity, expression=expression)


def _landmarks_px(prepared, V_cam, camera: Camera, R=None):
    """(478, 2) the model's landmarks on a mesh (N, 3) in the camera frame, projected by `camera`; R: the
    mesh's rotation (split_similarity), for the contour's yaw, when already known."""
    from ..geometry.camera import yaw_of_rotation

    R = split_similarity(prepared.model, V_cam)[1] if R is None else R
    L = prepared.embedding.points(V_cam, prepared.model.faces, yaw_deg=yaw_of_rotation(R))
    return camera.pixels(L)


def landmark_error_iod(prepared, uv, reference, iod_px):
    """How well a registration lines up with the image: the median 2D distance between its inner landmarks
    `uv` (478, 2) px (`_landmarks_px`) and `reference` (478, 2) px (the detected landmarks, or the coarse
    fit's projected ones), over the outer interocular distance iod_px. A depth that is not registered to
    the colour image shows here: the registration follows the depth, the landmarks the colour."""
    inner = np.setdiff1d(np.arange(lmk.N_LANDMARKS), prepared.embedding.contour_ids)
    return lmk.landmark_error(uv, reference, inner, iod_px)[1]


def _detect_and_fit(prepared, color, camera: Camera, times):
    """The largest face's landmarks and the coarse fit's mesh (N, 3) in the frame of `camera` (its focal
    length held)."""
    model = prepared.model
    t0 = time.perf_counter()
    face = lmk.detect_landmarks(color)[0]
    times["detect_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_landmarks(prepared, [face.points], [camera])
    im = fit.images[0]
    V0 = im.camera.to_camera(model.shape(fit.identity, im.expression))  # camera frame
    times["coarse_s"] = time.perf_counter() - t0
    return face, V0, fit.identity, im.expression


@dataclass
class _Lift:
    """The coarse mesh lifted onto the depth, and the landmark term it gives T-ICP."""

    vertices: np.ndarray      # (N, 3) camera frame, mm
    inner: np.ndarray         # (L,) MediaPipe ids of the inner landmarks (eyes, nose, lips, brows)
    depth_points: np.ndarray  # (L, 3) the depth under each detected inner landmark (NaN: none)
    keep: np.ndarray          # (L,) bool: on the depth surface (the trimmed similarity's inliers)
    iod_mm: float             # outer interocular distance of the lifted mesh
    iod_px: float             # ... of the detections


INNER_GROUPS = ("eyes", "nose", "lips", "brows")


def _lift_onto_depth(prepared, face, V0, depth, camera: Camera, times):
    """Similarity from the fitted inner landmarks to the depth under the detections (trimmed: landmarks
    off the depth surface, over holes or occluders, are dropped). Raises NoFaceError when the depth
    under the face does not look like a face."""
    model, emb = prepared.model, prepared.embedding
    t0 = time.perf_counter()
    groups = lmk.groups()
    inner = np.concatenate([groups[g] for g in INNER_GROUPS])
    L_model = emb.points(V0, model.faces, 0.0)[inner]
    L_depth = depth_at(depth, face.points[inner], camera)
    ok = np.isfinite(L_depth).all(1)
    if ok.sum() < 10:
        raise NoFaceError("the depth map has no valid depth under the detected face")
    keep = ok.copy()
    for _ in range(3):  # trimmed similarity: drop landmarks off the depth surface (holes, occluders)
        s_, R_, t_ = similarity_transform(L_model[keep], L_depth[keep])
        r = np.linalg.norm(s_ * L_model @ R_.T + t_ - L_depth, axis=1)
        r[~ok] = np.inf
        keep = ok & (r <= max(np.quantile(r[ok], 0.7) * 2.0, 3.0))
    lift_residual = float(np.median(r[keep])) if keep.any() else np.inf
    times["lift_residual_mm"] = lift_residual
    # a face's landmarks fit the depth under them to a few mm and its nose stands out in front of the eye
    # corners; a flat, unrelated or misregistered depth map does neither
    # (measured along the face's forward axis from the coarse fit, so that a turned face passes too)
    # (a hole at the nose tip: the nearest depth around it; no depth there at all: the check is not made)
    nose = depth_at(depth, face.points[[4]], camera, nearest=True)[0]
    if not np.isfinite(nose).all():
        nose = depth_at(depth, face.points[[4]], camera, window=8, nearest=True)[0]
    eyes = depth_at(depth, face.points[[33, 133, 362, 263]], camera)
    eyes = eyes[np.isfinite(eyes).all(1)]
    forward = split_similarity(model, V0)[1] @ np.array([0.0, 0.0, 1.0])  # the model's +z: towards the viewer
    relief = float((nose - eyes.mean(0)) @ forward) if len(eyes) >= 2 and np.isfinite(nose).all() else np.nan
    if np.isfinite(relief):
        times["nose_relief_mm"] = relief
    flat = np.isfinite(relief) and relief < MIN_NOSE_RELIEF_MM
    if keep.sum() < 10 or lift_residual > LIFT_RESIDUAL_MAX_MM or flat or not 0.5 < s_ < 2.0:
        raise NoFaceError(f"the depth under the detected face does not match a face (landmark residual "
                          f"{lift_residual:.1f} mm, nose {relief:.0f} mm in front of the eyes, scale {s_:.2f}): "
                          f"is the depth registered to the colour image?")
    V0 = s_ * V0 @ R_.T + t_
    times["lift_scale"] = s_
    times["lift_s"] = time.perf_counter() - t0
    iod_px = lmk.outer_interocular(face.points)
    iod_mm = lmk.outer_interocular(emb.points(V0, model.faces, 0.0))
    return _Lift(V0, inner, L_depth, keep, iod_mm, iod_px)


class _TemplateColours:
    """T-ICP's colour update: the template's per-part colours under Phong lighting, refitted to the
    image at the visible face-area vertices (`fit_template_colors`), each refit starting from the
    previous light."""

    def __init__(self, prepared, V0, color, depth, camera: Camera):
        self.faces, self.dom = prepared.model.faces, prepared.face_area.domain
        self.V0, self.color, self.depth, self.camera = V0, color, depth, camera
        self.labels = prepared.painted_parts[self.dom]
        self.light = None

    def __call__(self, V_face):
        # visible: in front of the camera and at the captured depth (not behind an occluder or in a hole)
        Vfull = self.V0.copy()
        Vfull[self.dom] = V_face
        normals = vertex_normals(Vfull, self.faces)[self.dom]
        z = V_face[:, 2]
        vis = depth_visible(self.camera.project(V_face), z, self.depth, np.maximum(5.0, 0.01 * z), window=1)
        vis &= (normals * V_face).sum(1) < 0
        colors, self.light = fit_template_colors(self.labels, V_face, normals, self.color, vis, self.camera,
                                                 light=self.light)
        return colors


def _report(res, use_color, lv, lift: _Lift, target, dom, times):
    """report.json's figures."""
    return {"inlier_fraction": [round(x, 4) for x in res.inlier_fraction],
            "median_residual_mm": [round(x, 4) for x in res.median_residual_mm],
            "iterations": res.iterations, "step_seconds": [round(x, 4) for x in res.step_seconds],
            "factor_seconds": round(res.factor_seconds, 4), "texture_constraint": bool(use_color),
            "landmarks_used": int(len(lv)), "interocular_mm": round(lift.iod_mm, 3),
            "interocular_px": round(lift.iod_px, 3), "target_points": int(len(target.points)),
            "template_vertices": int(len(dom)),
            "times_s": {k: round(v, 4) for k, v in times.items()}}


def surface_samples(V, F, n_points, rng, colors=None):
    """A Target of `n_points` points spread uniformly (by area) over the mesh (V, F), plus its vertices:
    face normals, interpolated colours, and boundary flags for points on triangles with an open edge."""
    V = np.asarray(V, float)
    F = np.asarray(F)
    area = 0.5 * np.linalg.norm(np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), axis=1)
    tri = rng.choice(len(F), n_points, p=area / area.sum())
    bary = rng.dirichlet([1.0, 1.0, 1.0], n_points)
    P = interpolate(V, F, tri, bary)
    Nf = face_normals(V, F)[tri]
    on_edge = boundary_vertices(F, len(V))[F].any(axis=1)[tri]
    C = None if colors is None else interpolate(np.asarray(colors, float), F, tri, bary)
    return Target(P, Nf, C, on_edge)


def register_scan(prepared, scan, settings: NicpSettings = None, n_points=100_000, image_size=640, focal_px=1000.0,
                  distance_iod=7.2, seed=0, use_color=None, frame: FaceFrame = None):
    """Register the PreparedModel's model to a 3D scan (fitter.registration.scan.Scan, mm): the scan is oriented (its
    face frame found by rendering it and detecting landmarks, `find_face_frame`, unless `frame` is
    given), seen by a virtual frontal camera (at `distance_iod` times its outer interocular distance:
    ~650 mm for an adult in mm, and the same view in any units) as an RGB-D pair for the landmarks and
    the coarse fit, and the template is registered to `n_points` samples of its surface. A scan whose
    outer interocular distance is implausible in mm (arbitrary units) is registered as a copy scaled to
    90 mm (whose face frame is found again on that copy) and the result scaled back.
    Returns (Registration in the scan's frame, with `view` the virtual camera's render; the virtual
    camera). use_color: default, when the scan has colours."""
    frame = find_face_frame(scan) if frame is None else frame
    iod = lmk.outer_interocular(np.nan_to_num(frame.landmarks))
    if not iod > 0:
        raise NoFaceError("the eye corners found on the scan coincide: cannot size the view")
    if not PLAUSIBLE_OUTER_IOD_MM[0] <= iod <= PLAUSIBLE_OUTER_IOD_MM[1]:
        # not in mm (arbitrary units): register a copy scaled to an adult's 90 mm, then scale back
        k = ADULT_OUTER_IOD_MM / iod
        reg, cam = register_scan(prepared, replace(scan, V=scan.V * k), settings, n_points, image_size, focal_px,
                                 distance_iod, seed, use_color)
        reg.vertices, reg.coarse_vertices = reg.vertices / k, reg.coarse_vertices / k
        reg.scale, reg.R, reg.t, reg.s_morph = split_similarity(prepared.model, reg.vertices)
        reg.report["scan_scaled_by"] = round(k, 6)
        reg.view_depth = reg.view_depth / k
        cam = Camera(cam.K, cam.R, cam.t / k, cam.width, cam.height)  # sees the unscaled scan the same way
        return reg, cam
    R = MODEL_TO_OPENCV @ frame.R
    t = np.array([0.0, 0.0, distance_iod * iod]) - R @ frame.nose_tip
    cam = Camera(intrinsics(focal_px, image_size, image_size), R, t, image_size, image_size)
    res = render_scan(scan, cam)
    color, depth = res.color_uint8(), res.depth.astype(np.float32)
    target = _scan_target(scan, cam, depth, color, n_points, seed)
    has_color = scan.colors is not None
    use_color = has_color if use_color is None else (use_color and has_color)
    reg = register_rgbd(prepared, color, depth, cam.K, settings, use_color=use_color, target=target)
    # back to the scan's frame: x_scan = Rᵀ (x_cam − t)
    to_scan = lambda X: (X - t) @ R  # noqa: E731
    reg.vertices = to_scan(reg.vertices)
    reg.coarse_vertices = to_scan(reg.coarse_vertices)
    reg.scale, reg.R, reg.t, reg.s_morph = split_similarity(prepared.model, reg.vertices)
    reg.report["frame"] = "scan"
    reg.view, reg.view_depth = color, depth
    return reg, cam


def _scan_target(scan, cam: Camera, depth, color, n_points, seed):
    """T-ICP's target for a scan seen by `cam`: `n_points` surface samples in the camera frame, their
    normals facing the camera, and (textured scans) the colour the camera sees where it sees them."""
    image_size = cam.width
    has_color = scan.colors is not None
    rng = np.random.default_rng(seed)
    target = surface_samples(cam.to_camera(scan.V), scan.F, n_points, rng, scan.colors if has_color else None)
    # which samples the virtual camera sees (for the normals' orientation and the colours)
    cam_id = Camera(cam.K, np.eye(3), np.zeros(3), image_size, image_size)
    uv = cam_id.project(target.points)
    z = target.points[:, 2]
    seen = depth_visible(uv, z, depth, np.maximum(1.0, 0.005 * z), window=1)
    seen &= (uv >= 0).all(1) & (uv[:, 0] <= image_size - 1) & (uv[:, 1] <= image_size - 1)
    # scans come with either winding: the surface the camera sees must face it
    if seen.any() and np.median((target.normals[seen] * -target.points[seen]).sum(1)) < 0:
        target.normals = -target.normals
    if has_color:  # the template's colour is fitted to the image: give the target the colour the camera sees
        shot = sample_image(color.astype(np.float32) / 255.0, uv[seen])[:, :3]
        gain = np.median(shot / np.maximum(target.colors[seen], 1e-3), axis=0)  # unseen: texture × mean light
        target.colors = np.clip(target.colors * gain, 0.0, 1.0)
        target.colors[seen] = shot
    return target


def scan_distances(reg_vertices, model, scan_V, scan_F, nose_tip, crop_mm=95.0, region="face"):
    """Scan-to-registration surface distance (mm): from each scan vertex within `crop_mm` of the nose
    tip to the registered surface of the model's `region`, for the scan points the registration covers:
    those whose closest point is not on a triangle at the region's open rim and lies along the surface
    normal there (within ~45°; a point beyond the rim — ears, temples, hair, neck of a full-head scan —
    meets the surface obliquely). Returns (distances, covered fraction)."""
    Vs, _ = crop(scan_V, scan_F, nose_tip, crop_mm)
    Fr, old = submesh(model.faces, model.region_mask(region))
    Vr = np.asarray(reg_vertices)[old]
    cp = MeshQuery(Vr, Fr).closest(Vs)
    rim = boundary_vertices(Fr, len(old))[Fr].any(axis=1)
    along = np.abs((face_normals(Vr, Fr)[cp.triangles] * (Vs - cp.points)).sum(1))
    covered = ~rim[cp.triangles] & ((along >= 0.7 * cp.distances) | (cp.distances < 1.0))
    return cp.distances[covered], float(covered.mean())


def write_registration(reg: Registration, model, outdir, overlay=None, capture=None):
    """registered.obj (model topology, mm, camera or scan frame), s_morph.npz (S_morph, the similarity, the
    coarse fit's coefficients), report.json, capture.json (where the capture came from, `capture`: a dict,
    see `facefit register`) and, when given, overlay.png — each written atomically."""
    d = Path(outdir)
    write_obj(d / "registered.obj", reg.vertices, model.faces)
    coefficients = {k: np.asarray(v, np.float64)
                    for k, v in (("identity", reg.identity), ("expression", reg.expression)) if v is not None}
    save_npz_atomic(d / "s_morph.npz", s_morph=reg.s_morph.astype(np.float32), f=np.float64(reg.scale),
                    R=reg.R, t=reg.t, model=np.array(model.name),
                    model_sha256=np.array(str(model.metadata.get("model_sha256"))), **coefficients)
    write_json_atomic(d / "report.json", reg.report)
    if capture is not None:
        write_json_atomic(d / "capture.json", capture)
    if overlay is not None:
        write_image_atomic(d / "overlay.png", overlay)
    return d


def registration_overlay(prepared, V_cam, color, K):
    """The colour image with the face area of a mesh of the model's topology, V_cam (N, 3) in the camera
    frame, shaded over it (`fitter.photo.overlay.face_overlay`)."""
    H, W = color.shape[:2]
    return face_overlay(color, prepared, V_cam, Camera(np.asarray(K, float), np.eye(3), np.zeros(3), W, H))
