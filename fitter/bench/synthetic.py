"""Synthetic data with exact ground truth, shared by the tests and the benchmarks: out-of-span faces,
RGB-D captures with sensor-like noise and occluders, faces with wrinkle-scale detail under known SH
light, and the scoring of the fine stage against such truth."""
import cv2
import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from ..detection import landmarks as lmk
from ..geometry.camera import Camera, look_at_face
from ..geometry.mesh import boundary_vertices, subdivide_midpoint, vertex_normals
from ..geometry.render import get_renderer
from ..photo.fine import depth_normals, refined_region
from ..photo.texture import sh_basis
from ..registration.scan import SCAN_BACKGROUND


def smooth_displacement(V, face, rng, n_bumps=8, sigma_mm=20.0, amplitude_mm=3.0):
    """(N, 3) a smooth random displacement field: Gaussian bumps (σ = sigma_mm) centred on random face
    vertices, each with a random 3D amplitude ~ N(0, amplitude_mm²) per axis. Adding it to a model
    shape gives a face outside the model's span."""
    C = V[face][rng.choice(len(face), n_bumps, replace=False)]
    A = rng.normal(0.0, amplitude_mm, (n_bumps, 3))
    d2 = ((V[:, None, :] - C[None]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma_mm ** 2)) @ A

def synthetic_rgbd(prepared, rng, width=640, height=480, focal_px=570.0, yaw=0.0, occluders=True,
                   depth_noise_mm=0.8, holes=6, flying=True):
    """A synthetic RGB-D capture of a random face of the PreparedModel's model (painted albedo) (identity N(0,1), a few expressions) with
    sensor-like depth (Gaussian noise growing with depth², random holes, flying pixels at depth edges)
    and, optionally, occluders: a hair band across the forehead and brows, and a hand patch on one
    cheek (both in colour and depth). Returns a dict: color, depth, K, V (ground-truth mesh, camera
    frame), occluded (N,) bool (vertices behind an occluder), brows (N,) bool."""
    model = prepared.model
    alpha = rng.standard_normal(model.n_identity)
    beta = np.zeros(model.n_expression)
    beta[rng.choice(model.n_expression, 3, replace=False)] = rng.uniform(0, 0.4, 3)
    Vm = model.shape(alpha, beta)
    face = model.regions["face"]
    cam = look_at_face(Vm[face].mean(0), yaw, rng.uniform(-8, 8), rng.uniform(550, 750), focal_px, width, height)
    # a real sensor's principal point is off-centre
    cam = cam.with_principal_point(cam.principal_point + np.array([rng.uniform(-8, 8), rng.uniform(-8, 8)]))
    V = cam.to_camera(Vm)
    cam_id = Camera(cam.K, np.eye(3), np.zeros(3), width, height)
    F = prepared.render_faces
    albedo = np.clip(prepared.painted_albedo * rng.uniform(0.8, 1.1), 0, 1)
    light = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.1), -1.0)
    res = get_renderer().render(V, F, cam_id, vertex_colors=albedo, light_dir=light, background=SCAN_BACKGROUND)
    color = res.color_uint8()
    depth = res.depth.astype(np.float32).copy()
    # background wall 400 mm behind the face (a sensor sees something there)
    wall = np.median(depth[depth > 0]) + 400.0
    depth[depth == 0] = wall
    occ = np.zeros((height, width), bool)
    uv = cam_id.project(V)
    brow_ids = [np.asarray(model.metadata["reference_landmarks_68"])[17:27]]
    brows = np.zeros(model.n_vertices, bool)
    brows[face] = prepared.painted_parts[face] == 1
    if occluders:
        # hair band: a dark strip across the forehead down to just above the brows, 15 mm in front
        bu = uv[brows]
        top, bottom = bu[:, 1].min() - 0.9 * np.ptp(bu[:, 1]) - 20, bu[:, 1].min() - 2
        band = np.zeros_like(occ)
        band[int(max(top, 0)):int(max(bottom, 0)), :] = True
        band &= res.mask
        depth[band] -= 15.0
        color[band] = (np.array([70, 45, 30]) + rng.integers(-10, 10, 3)).clip(0, 255)
        # a hand on one cheek (in its own shadow: darker than the lit face), 25 mm in front
        L68 = uv[np.asarray(model.metadata["reference_landmarks_68"])]
        iod = lmk.outer_interocular(L68)
        cheek = L68[3 if rng.random() < 0.5 else 13]
        hand = np.zeros((height, width), np.uint8)
        cv2.ellipse(hand, (int(cheek[0]), int(cheek[1])), (int(0.3 * iod), int(0.4 * iod)), 20, 0, 360, 1, -1)
        hand = hand.astype(bool)
        depth[hand] = np.minimum(depth[hand], np.median(depth[hand & res.mask]) - 25.0)
        color[hand] = (np.array([150, 100, 80]) + rng.integers(-15, 15, 3)).clip(0, 255)
        occ = band | hand
    # sensor noise: Gaussian growing with depth², holes, flying pixels at discontinuities
    z0 = np.median(depth[res.mask])
    depth += rng.normal(0, depth_noise_mm, depth.shape).astype(np.float32) * (depth / z0) ** 2
    for _ in range(holes):
        c = (int(rng.uniform(0.25, 0.75) * width), int(rng.uniform(0.2, 0.8) * height))
        m = np.zeros((height, width), np.uint8)
        cv2.circle(m, c, int(rng.uniform(4, 14)), 1, -1)
        depth[m.astype(bool)] = 0
    if flying:
        gy, gx = np.gradient(depth)
        edge = (np.hypot(gx, gy) > 20) & (depth > 0)
        t = rng.uniform(0, 1, edge.sum()).astype(np.float32)
        depth[edge] = depth[edge] * (1 - 0.5 * t) + wall * 0.5 * t
    depth[depth < 0] = 0
    vis = res.mask
    vz = V[:, 2]
    px = np.clip(np.rint(uv).astype(int), [0, 0], [width - 1, height - 1])
    seen = vis[px[:, 1], px[:, 0]] & (np.abs(res.depth[px[:, 1], px[:, 0]] - vz) < 2.0)
    occluded = seen & occ[px[:, 1], px[:, 0]]
    return {"color": color, "depth": depth, "K": cam.K.copy(), "V": V, "occluded": occluded, "brows": brows,
            "visible": seen, "brow_ids": brow_ids}

def wrinkle_field(points, rng, wavelengths_mm=(4.0, 9.0), rms_mm=0.15, components=24):
    """(N,) band-limited height field (mm) at 3D points: a sum of random plane waves with wavelengths in
    the given band and random directions and phases, scaled to the given RMS."""
    k = rng.normal(size=(components, 3))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    k *= (2 * np.pi / rng.uniform(*wavelengths_mm, size=components))[:, None]
    h = np.cos(points @ k.T + rng.uniform(0, 2 * np.pi, components)).sum(1)
    return h * (rms_mm / max(float(np.sqrt(np.mean(h * h))), 1e-12))

def detailed_face(prepared, rng, levels=2, rms_mm=0.15):
    """A random face of the PreparedModel's model (identity N(0, 1), a few expressions ≤ 0.4) whose refined region is subdivided
    `levels` times and displaced along its normals by `wrinkle_field` (faded to zero over 8 mm at the
    region's border). Returns (V_base (N, 3) the model shape, V (M, 3) with detail, F (T, 3), albedo
    (M, 3), V_smooth (M, 3) the subdivided shape without the detail)."""
    model = prepared.model
    b = np.zeros(model.n_expression)
    b[rng.choice(model.n_expression, 3, replace=False)] = rng.uniform(0, 0.4, 3)
    V0 = model.shape(rng.standard_normal(model.n_identity), b)
    F = prepared.render_faces
    region = model.region_mask(refined_region(model))
    inner = region[F].all(1)
    Fi, Fo = F[inner], F[~inner]
    albedo = prepared.painted_albedo
    V, Fs, A = V0, Fi, albedo
    inside = region.astype(float)
    for _ in range(levels):
        V, Fs, extra = subdivide_midpoint(V, Fs, np.column_stack([A, inside]))
        A, inside = extra[:, :3], extra[:, 3]
    F_all = np.concatenate([Fs, Fo])
    border = boundary_vertices(Fi, model.n_vertices)
    border = border[np.isin(border, np.flatnonzero(region))]
    dist = cKDTree(V0[border]).query(V)[0] if len(border) else np.full(len(V), np.inf)
    fade = np.clip(dist / 8.0, 0, 1) * (inside > 0.999)
    h = wrinkle_field(V, rng, rms_mm=rms_mm) * fade
    n = vertex_normals(V, F_all)
    return V0, V + h[:, None] * n, F_all, A, V

def sh_render(V, F, camera, albedo, sh, specular=0.0, shininess=40.0, background=(0.3, 0.3, 0.3)):
    """uint8 image of the mesh under SH lighting (9, 3) with per-vertex albedo, plus an optional white
    Blinn-Phong highlight (light along the SH's linear direction), and the render result."""
    res = get_renderer().render(V, F, camera, vertex_colors=albedo, ambient=1.0, diffuse=0.0)
    m = res.mask
    n = res.normal[m].astype(float)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    col = res.color[m] * np.clip(sh_basis(n) @ sh, 0, None)
    if specular > 0:
        l = sh[[3, 1, 2]].mean(1)  # SH order-1 coefficients (y, z, x) -> direction (x, y, z)
        l = l / max(np.linalg.norm(l), 1e-12)
        P = res.surface_points(V, F)[m] @ camera.R.T + camera.t
        v = -P / np.linalg.norm(P, axis=1, keepdims=True)
        hv = (l + v) / np.linalg.norm(l + v, axis=1, keepdims=True)
        col = col + specular * np.clip((n * hv).sum(1), 0, None)[:, None] ** shininess
    img = np.empty(res.color.shape)
    img[:] = background
    img[m] = col
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), res

def random_sh(rng, strength=0.5):
    """(9, 3) plausible SH lighting: a constant term, a random first-order direction towards the camera
    side, small second-order terms; grey light with a slight tint."""
    L = np.zeros((9, 3))
    d = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.2), -1.0])
    d /= np.linalg.norm(d)
    base = np.array([0.95, 0.95, 0.95]) * rng.uniform(0.9, 1.1, 3)
    L[0] = 0.75 * base
    L[1], L[2], L[3] = strength * d[1] * base, strength * d[2] * base, strength * d[0] * base
    L[4:] = rng.normal(0, 0.03, (5, 1)) * base
    return L

def _normal_angles_deg(n1, n2):
    return np.degrees(np.arccos(np.clip((n1 * n2).sum(-1), -1.0, 1.0)))

def fine_case_errors(fine_result, V_true, F_true, R_true, t_true, V_smooth=None):
    """Depth and normal errors of the medium (d₀) and fine depth maps of a FineResult against the true
    mesh rendered into the same crop pixels, over the pixels the stage solved that are skin in both.
    With V_smooth (the true mesh without its fine detail), also how much of the detail the stage
    recovered: the wrinkle-scale true detail δ* = high-pass(depth(V_true) − depth(V_smooth)) against the
    wrinkle-scale change δ = high-pass(fine − medium): their correlation and rms(δ − δ*) / rms(δ*) (1 for
    the medium result, which has no detail); and the normal error that d₀ plus the whole true detail
    would have (a perfect detail recovery on the medium shape) and that of the smooth truth."""
    cam = Camera(fine_result.camera.K, R_true, t_true, fine_result.camera.width, fine_result.camera.height)
    gt = get_renderer().render(V_true, F_true, cam).depth.astype(float)
    m = fine_result.unknown & fine_result.skin & (gt > 0)
    if V_smooth is not None:
        smooth = get_renderer().render(V_smooth, F_true, cam).depth.astype(float)
        m &= smooth > 0
    n_gt = depth_normals(gt, cam)
    out = {"pixels": int(m.sum())}
    for tag, d in (("medium", fine_result.depth0), ("fine", fine_result.depth)):
        n = depth_normals(d, cam)
        diff = (d - gt)[m]
        out[f"{tag}_depth_mm"] = float(np.mean(np.abs(diff - np.median(diff))))
        out[f"{tag}_normal_deg"] = float(np.mean(_normal_angles_deg(n[m], n_gt[m])))
    if V_smooth is not None:
        # both sides through the same high-pass (σ = 3 px), over the same pixels: the stage's change also
        # holds corrections of the medium shape, which are not detail
        true_detail = _high_pass(np.where(m, gt - smooth, 0.0), m)[m]
        change = _high_pass(np.where(m, fine_result.depth - fine_result.depth0, 0.0), m)[m]
        rms = float(np.sqrt(np.mean(true_detail ** 2)))
        out["true_detail_rms_mm"] = rms
        out["detail_correlation"] = float(np.corrcoef(change, true_detail)[0, 1])
        out["detail_relative_error"] = float(np.sqrt(np.mean((change - true_detail) ** 2)) / max(rms, 1e-9))
        # what a perfect detail recovery on the medium shape would reach: d₀ plus the true detail (the rest
        # of the error is the medium shape's own, which the d₀ prior keeps)
        perfect = np.where(m, fine_result.depth0 + (gt - smooth), fine_result.depth0)
        for tag, d in (("perfect_detail", perfect), ("smooth_truth", smooth)):
            out[f"{tag}_normal_deg"] = float(np.mean(_normal_angles_deg(depth_normals(d, cam)[m], n_gt[m])))
    return out

def _high_pass(depth, mask, sigma_px=3.0):
    """Depth minus its Gaussian low-pass (normalised inside the mask): the wrinkle-scale detail."""
    w = gaussian_filter(mask.astype(float), sigma_px)
    low = gaussian_filter(np.where(mask, depth, 0.0), sigma_px) / np.maximum(w, 1e-6)
    return np.where(mask, depth - low, 0.0)


TURNTABLE_TEXTURES = ("noise", "skin", "painted", "flat")


def turntable_albedo(prepared, rng, texture):
    """(N, 3) per-vertex albedo in [0, 1]: "noise" (albedo noise σ 0.18 on a skin tone: texture everywhere,
    not a face a detector accepts), "skin" (the painted albedo — brows, lips, eyes — with multiplicative
    blemishes σ 0.12 on every vertex), "painted" (the painted albedo alone, as the mini MICC's synthetic
    subject), "flat" (one skin tone: only shading)."""
    n = prepared.model.n_vertices
    if texture == "noise":
        return np.clip(0.55 + 0.18 * rng.standard_normal((n, 1)) + np.array([[0.15, 0.0, -0.1]]), 0, 1)
    if texture == "skin":
        return np.clip(prepared.painted_albedo * (1.0 + 0.12 * rng.standard_normal((n, 1))), 0, 1)
    if texture == "painted":
        return np.asarray(prepared.painted_albedo, float)
    if texture == "flat":
        return np.tile([0.75, 0.6, 0.5], (n, 1))
    raise ValueError(f"texture is one of {', '.join(TURNTABLE_TEXTURES)}, not {texture!r}")


def textured_turntable(prepared, rng, texture="noise", yaws=tuple(np.linspace(-45, 45, 9)), focal_px=800.0,
                       distance_mm=480.0, size=(640, 480), landmark_noise_px=2.0):
    """A random identity (neutral) filmed turning in front of a fixed light, for the multi-view tests and
    benchmarks, with the albedo of `turntable_albedo`. Returns (identity (K,), V (N, 3), views) with views a
    list of (image (H, W, 3) uint8, camera, landmarks (478, 2): the true ones projected, plus Gaussian noise
    of landmark_noise_px)."""
    model = prepared.model
    alpha, _ = model.random_coefficients(rng)
    V = model.shape(alpha, np.zeros(model.n_expression))
    colors = turntable_albedo(prepared, rng, texture)
    centre = V[model.region("face")].mean(0)
    emb = prepared.require_embedding()
    views = []
    for yaw in yaws:
        cam = look_at_face(centre, yaw, 5 * np.sin(yaw / 20), distance_mm, focal_px, *size)
        r = get_renderer().render(V, prepared.render_faces, cam, vertex_colors=colors, light_dir=(0.0, 0.0, -1.0),
                                  background=(0.3, 0.35, 0.4))
        image = (np.clip(r.color, 0, 1) * 255 + 0.5).astype(np.uint8)
        u = cam.project(emb.points(V, model.faces, yaw)) + rng.normal(0, landmark_noise_px, (478, 2))
        views.append((image, cam, u))
    return alpha, V, views
