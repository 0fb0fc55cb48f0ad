"""Texture and illumination from one photo, and a texture merged from several (S1 Eq. 4-5; S2 Eq. 4-5 / S3 spherical harmonics).

Colour model at a visible vertex v with unit normal n_v (camera frame):
    SH:    I_v = a_v ⊙ (Y(n_v) L)                       Y: 9 real SH basis values, L: (9, 3)
    Phong: I_v = a_v ⊙ (k_a + k_d max(0, n_v·l)) + k_s max(0, r_v·e_v)^γ   (fitted by Levenberg-Marquardt)
Per-vertex albedo a (face area) minimises, per channel,
    Σ_observed (s_v a_v - I_v)² + λ_smooth ‖L a‖² + λ_sym ‖a - a∘mirror‖² + λ_prior ‖a - ā‖²
with L the mesh's uniform Laplacian, `mirror` the left-right vertex pairing and ā the mean observed
albedo: a sparse SPD system (solved by preconditioned CG, see fit_texture). Observations are the photo's colours at visible,
camera-facing vertices labelled skin by the face parsing. Albedo and lighting alternate.
A model with a colour PCA (BFM) can use it instead of the per-vertex estimate (prior mean/basis).
"""
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

from ..geometry.camera import Camera
from ..geometry.mesh import interpolate, uniform_laplacian, vertex_normals
from ..geometry.render import depth_visible, get_renderer

LUMA = np.array([0.299, 0.587, 0.114])  # luminance of RGB colours


def luma(image):
    """(..., ) luminance of (..., 3) colours."""
    return np.asarray(image) @ LUMA


SH_C = (0.886227, 1.023328, 0.495416, 0.858086, 0.429043)  # irradiance-convolved SH constants


def sh_basis(n):
    """(N, 9) real spherical-harmonic irradiance basis at unit normals n (N, 3) (Ramamoorthi-Hanrahan)."""
    x, y, z = np.asarray(n, float).T
    c0, c1, c2, c3, c4 = SH_C
    return np.stack([np.full_like(x, c0), c1 * y, c1 * z, c1 * x, c3 * x * y, c3 * y * z,
                     c2 * (3 * z * z - 1), c3 * x * z, c4 * (x * x - y * y)], axis=1)


def fit_sh_lighting(normals, colors, albedo, weights=None, ridge=1e-3):
    """(9, 3) SH coefficients L minimising Σ w (a ⊙ Y(n) L - I)² (+ ridge on the higher orders)."""
    Y = sh_basis(normals)
    w = np.ones(len(Y)) if weights is None else np.asarray(weights, float)
    L = np.zeros((9, 3))
    reg = np.diag([0.0] + [ridge] * 8) * max(w.sum(), 1.0)
    for ch in range(3):
        A = Y * albedo[:, ch:ch + 1]
        L[:, ch] = np.linalg.solve((A * w[:, None]).T @ A + reg, (A * w[:, None]).T @ colors[:, ch])
    return L


@dataclass
class PhongLight:
    direction: np.ndarray   # (3,) unit vector towards the light, camera frame
    ambient: np.ndarray     # (3,)
    diffuse: np.ndarray     # (3,)
    specular: float
    shininess: float

    def to_dict(self):
        return {"direction": self.direction.round(5).tolist(), "ambient": self.ambient.round(5).tolist(),
                "diffuse": self.diffuse.round(5).tolist(), "specular": round(float(self.specular), 5),
                "shininess": round(float(self.shininess), 3)}


def phong_shade(albedo, normals, view_dirs, light: PhongLight):
    """(N, 3) Phong colours; view_dirs are unit vectors from the surface towards the camera."""
    ndl = normals @ light.direction
    diffuse = albedo * (light.ambient + light.diffuse * np.maximum(ndl, 0)[:, None])
    r = 2 * ndl[:, None] * normals - light.direction
    spec = light.specular * np.maximum((r * view_dirs).sum(1), 0) ** light.shininess
    return diffuse + spec[:, None]


# The Phong light's physically meaningful ranges: a light in front of the face (towards the camera's
# half-space), non-negative ambient and diffuse gains, a specular weight up to white, an exponent from a
# broad lobe to a sharp highlight. Unconstrained, a fit drifts where the data do not hold it: shininess
# 1e9…1e27 when there is hardly any specular, a light behind the head (measured on the real photos).
PHONG_GAIN_MAX = 4.0
PHONG_SPECULAR_MAX = 1.0
PHONG_SHININESS_RANGE = (1.0, 200.0)


def phong_in_bounds(light: PhongLight):
    """Whether a PhongLight lies in the ranges above."""
    gains = np.concatenate([light.ambient, light.diffuse])
    return bool(light.direction[2] <= 0 and np.all((gains >= 0) & (gains <= PHONG_GAIN_MAX))
                and 0 <= light.specular <= PHONG_SPECULAR_MAX
                and PHONG_SHININESS_RANGE[0] <= light.shininess <= PHONG_SHININESS_RANGE[1])


def fit_phong(albedo, normals, view_dirs, colors, weights=None, start: PhongLight = None):
    """Phong light (S1 Eq. 4-5) by Levenberg-Marquardt on the colour residual, given the albedo, within
    the physical ranges above: when the unconstrained optimum lies outside them, the fit is redone with
    the bounds (trust-region reflective) from that optimum moved inside. start: a light to start from
    (e.g. the previous fit of the same image). Returns (PhongLight, RMS residual)."""
    from scipy.optimize import least_squares

    w = np.sqrt(np.ones(len(colors)) if weights is None else np.asarray(weights, float))[:, None]

    def unpack(p):
        th, ph = p[0], p[1]
        d = np.array([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), -np.cos(th)])
        return PhongLight(d, p[2:5], p[5:8], p[8] ** 2, np.exp(p[9]))

    def pack(light):  # the inverse of unpack, with θ in [0, π]
        d = np.asarray(light.direction, float)
        return np.concatenate([[np.arccos(np.clip(-d[2], -1, 1)), np.arctan2(d[1], d[0])], light.ambient,
                               light.diffuse, [np.sqrt(max(light.specular, 0.0)), np.log(max(light.shininess, 1e-3))]])

    def res(p):
        return ((phong_shade(albedo, normals, view_dirs, unpack(p)) - colors) * w).ravel()

    p0 = np.array([0.3, -1.5, 0.4, 0.4, 0.4, 0.6, 0.6, 0.6, 0.1, np.log(10.0)])
    if start is not None:
        p0 = pack(start)
    sol = least_squares(res, p0, method="lm", max_nfev=200)
    if not phong_in_bounds(unpack(sol.x)):
        lo = np.array([0.0, -np.inf] + [0.0] * 6 + [0.0, np.log(PHONG_SHININESS_RANGE[0])])
        hi = np.array([np.pi / 2, np.inf] + [PHONG_GAIN_MAX] * 6 + [np.sqrt(PHONG_SPECULAR_MAX),
                                                                     np.log(PHONG_SHININESS_RANGE[1])])
        x0 = pack(unpack(sol.x))
        margin = 1e-6 * (hi[2:] - lo[2:])  # strictly inside: the trust-region method starts there
        x0[0] = np.clip(x0[0], 1e-6, np.pi / 2 - 1e-6)
        x0[2:] = np.clip(x0[2:], lo[2:] + margin, hi[2:] - margin)
        sol = least_squares(res, x0, bounds=(lo, hi), method="trf", max_nfev=200)
    return unpack(sol.x), float(np.sqrt(np.mean(sol.fun ** 2)))


def find_mirror_pairs(model, region="face"):
    """(i, j) vertex pairs mirrored across the model's x = 0 plane (within 1 mm), in `region`
    (`PreparedModel.mirror_pairs` keeps them)."""
    idx = model.regions.get(region, np.arange(model.n_vertices)).astype(np.int64)
    P = model.mean[idx]
    d, j = cKDTree(P).query(P * np.array([-1.0, 1.0, 1.0]))
    ok = d < 1.0  # mm
    return idx[ok], idx[j[ok]]


def build_albedo_system(model, mirror_pairs, region, smooth, symmetry, prior):
    """Region indices, vertex -> row map and the constant part of the albedo normal equations
    (smoothness, symmetry, prior); mirror_pairs: `find_mirror_pairs(model, region)`
    (`PreparedModel.albedo_system` keeps it)."""
    N = model.n_vertices
    reg_idx = model.regions.get(region, np.arange(N)).astype(np.int64)
    pos = -np.ones(N, np.int64)
    pos[reg_idx] = np.arange(len(reg_idx))
    Fr = pos[model.faces[(pos[model.faces] >= 0).all(1)]]
    Lap = uniform_laplacian(Fr, len(reg_idx))
    mi, mj = mirror_pairs
    M = sp.csr_matrix((np.ones(len(mi)), (pos[mi], pos[mj])), shape=(len(reg_idx),) * 2)
    paired = sp.diags((np.asarray(M.sum(1)).ravel() > 0).astype(float))
    S = paired @ (sp.identity(len(reg_idx), format="csr") - M)  # a_i - a_mirror(i) on paired rows
    base = (smooth * (Lap.T @ Lap) + symmetry * (S.T @ S) + prior * sp.identity(len(reg_idx))).tocsc()
    return reg_idx, pos, base


@dataclass
class TextureFit:
    albedo: np.ndarray            # (N, 3) per-vertex albedo in [0, 1] (outside the region: mean)
    sh: np.ndarray                # (9, 3)
    phong: PhongLight
    observed: np.ndarray          # (N,) bool: vertex colour seen in the photo
    colors: np.ndarray            # (N, 3) photo colour at observed vertices
    residual_sh: float            # RMS colour residual (0..1) at observed vertices
    residual_phong: float
    info: dict = field(default_factory=dict)


def sample_image(image, uv):
    """Bilinear samples (K, C) of a float image at pixel coordinates uv (K, 2) (OpenCV convention)."""
    import cv2

    k = len(uv)
    if k == 0:
        return np.zeros((0, 1 if np.ndim(image) == 2 else np.shape(image)[2]), np.float32)
    cols = 1024  # cv2.remap wants maps under 32767 on a side
    rows = -(-k // cols)
    maps = np.zeros((2, rows * cols), np.float32)
    maps[:, :k] = np.asarray(uv, np.float32).T
    out = cv2.remap(np.asarray(image, np.float32), maps[0].reshape(rows, cols), maps[1].reshape(rows, cols),
                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:k]


def texture_at_pixels(result, uv, uv_faces, texture):
    """(H, W, 3) float [0, 1]: a UV texture (T, T, 3) uint8 or float looked up (bilinear) at every pixel of
    a render `result` (fitter.geometry.render.RenderResult) of triangles whose corners have texture coordinates
    uv[uv_faces] (uv (U, 2) in [0, 1], v up; uv_faces (F, 3), one row per triangle drawn); 0 off the mesh."""
    tex = np.asarray(texture, np.float32)
    tex = tex / 255.0 if tex.max() > 1.5 else tex
    m = result.mask
    st = interpolate(np.asarray(uv, float), uv_faces, result.triangle_id[m], result.barycentric[m].astype(float))
    T = tex.shape[0]
    px = np.column_stack([st[:, 0] * T - 0.5, (1 - st[:, 1]) * T - 0.5])
    out = np.zeros(m.shape + (3,), np.float32)
    out[m] = sample_image(tex, px)[:, :3]
    return out


def fit_texture(prepared, V, camera: Camera, image, visible, skin_mask=None, region="face", iterations=3,
                smooth=2.0, symmetry=0.5, prior=0.05):
    """Estimate SH and Phong lighting and per-vertex albedo of mesh V (model frame, mm) from `image`
    (H, W, 3) uint8 or float in [0, 1]. prepared: the PreparedModel (its albedo system); visible: (N,)
    bool; skin_mask: (H, W) bool of usable pixels."""
    model = prepared.model
    img = np.asarray(image, np.float32)
    if img.dtype != np.float32 or img.max() > 1.5:
        img = img / 255.0
    N = model.n_vertices
    reg_idx = model.regions.get(region, np.arange(N)).astype(np.int64)
    Vc = camera.to_camera(V)
    normals = vertex_normals(V, model.faces) @ camera.R.T
    view = -Vc / np.linalg.norm(Vc, axis=1, keepdims=True)
    facing = (normals * view).sum(1)
    uv = camera.project(V)
    H, W = img.shape[:2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    obs = np.zeros(N, bool)
    obs[reg_idx] = True
    obs &= visible & inside & (facing > 0.25)
    if skin_mask is not None:
        px = np.clip(np.rint(uv).astype(int), [0, 0], [W - 1, H - 1])
        obs &= skin_mask[px[:, 1], px[:, 0]]
    colors = np.zeros((N, 3))
    colors[obs] = sample_image(img, uv[obs])[:, :3]
    o = np.flatnonzero(obs)
    if len(o) < 30:
        raise ValueError("fewer than 30 face vertices are visible skin: cannot estimate texture")
    w_obs = np.clip(facing[o], 0, 1)
    reg_idx, pos, base = prepared.albedo_system(region, smooth, symmetry, prior)
    albedo_mean = np.median(colors[o], axis=0) / 0.8  # start: uniform albedo under ~0.8 shading
    albedo = np.tile(albedo_mean, (N, 1))
    for _ in range(iterations):
        sh = fit_sh_lighting(normals[o], colors[o], albedo[o], w_obs)
        shading = sh_basis(normals) @ sh  # (N, 3)
        ro = pos[o]
        for ch in range(3):
            s = shading[o, ch]
            diag = np.zeros(len(reg_idx))
            diag[ro] = w_obs * s * s
            rhs = np.zeros(len(reg_idx))
            rhs[ro] = w_obs * s * colors[o, ch]
            rhs += prior * albedo_mean[ch]
            # The matrix changes with every lighting update. It is well conditioned (prior·I), so
            # Jacobi-preconditioned CG from the previous albedo converges in ~20 ms, where a CHOLMOD
            # refactorisation of its bi-Laplacian pattern (1.3 M nonzeros in L) costs ~100 ms.
            A = (base + sp.diags(diag, format="csc")).tocsr()
            x, _ = spla.cg(A, rhs, x0=albedo[reg_idx, ch], rtol=1e-6, maxiter=2000,
                           M=sp.diags(1.0 / A.diagonal()))
            albedo[reg_idx, ch] = x
        albedo = np.clip(albedo, 0.0, 1.0)
        albedo_mean = albedo[o].mean(0)
    pred = albedo[o] * (sh_basis(normals[o]) @ sh)
    res_sh = float(np.sqrt(np.mean((pred - colors[o]) ** 2)))
    sub = o if len(o) <= 1500 else o[np.random.default_rng(0).choice(len(o), 1500, replace=False)]
    ws = np.clip(facing[sub], 0, 1)
    phong, res_phong = fit_phong(albedo[sub], normals[sub], view[sub], colors[sub], ws)
    outside = np.ones(N, bool)
    outside[reg_idx] = False
    albedo[outside] = albedo[o].mean(0)
    return TextureFit(albedo, sh, phong, obs, colors, res_sh, res_phong,
                      {"observed_vertices": int(len(o)), "region": region})


def rasterise_uv(model, size):
    """Which texels of a size² texture the UV layout covers, and each one's triangle and barycentrics
    (rendered with vertices at (u W, (1 - v) H, 1) seen by an identity camera; `PreparedModel.uv_rasterisation`
    keeps it per size)."""
    if model.uv is None or model.uv_faces is None:
        raise ValueError(f"model '{model.name}' has no UV layout")
    UVp = np.column_stack([model.uv[:, 0] * size - 0.5, (1 - model.uv[:, 1]) * size - 0.5, np.ones(len(model.uv))])
    flat = Camera(np.eye(3), np.eye(3), np.zeros(3), size, size)
    r = get_renderer().render(UVp, model.uv_faces, flat, near=0.5, far=2.0)
    return r.mask, r.triangle_id[r.mask], r.barycentric[r.mask].astype(np.float64)


def uv_texture(prepared, V, camera: Camera, image, depth, tex: TextureFit, size=1024, feather_px=12, photo_mask=None):
    """(size, size, 3) uint8 texture in the model's UV layout: the photo where it sees the surface (and
    `photo_mask` allows), the albedo estimate (times the mean shading) elsewhere, blended over
    `feather_px` texels. `depth` is the photo-view depth render of V (mm, 0 = none) for visibility."""
    import cv2

    model = prepared.model
    img = np.asarray(image, np.float32)
    img = img / 255.0 if img.max() > 1.5 else img
    covered, tri, bary = prepared.uv_rasterisation(size)
    P = interpolate(V, model.faces, tri, bary)                 # 3D point of each texel
    A = interpolate(tex.albedo, model.faces, tri, bary)        # albedo of each texel
    Nrm = interpolate(vertex_normals(V, model.faces), model.faces, tri, bary) @ camera.R.T
    Pc = camera.to_camera(P)
    uv = camera.project(P)
    H, W = img.shape[:2]
    px = np.clip(np.rint(uv).astype(int), [0, 0], [W - 1, H - 1])
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    facing = -(Nrm * Pc).sum(1) / np.linalg.norm(Pc, axis=1)
    seen = inside & depth_visible(uv, Pc[:, 2], depth, np.maximum(1.0, 0.004 * Pc[:, 2]), window=0) & (facing > 0.2)
    if photo_mask is not None:  # e.g. the face parsing: take the photo only where it shows the face
        seen &= photo_mask[px[:, 1], px[:, 0]]
    mean_shading = float(np.clip((sh_basis(np.array([[0, 0, -1.0]])) @ tex.sh).mean(), 0.2, 2.0))
    fill = np.clip(A * mean_shading, 0, 1)
    photo = np.zeros_like(fill)
    photo[seen] = sample_image(img, uv[seen])[:, :3]
    seen_img = np.zeros((size, size), np.float32)
    seen_img[covered] = seen
    dist = cv2.distanceTransform((seen_img > 0).astype(np.uint8), cv2.DIST_L2, 3)
    alpha = np.clip(dist[covered] / feather_px, 0, 1)[:, None]
    out = np.zeros((size, size, 3), np.float32)
    out[covered] = alpha * photo + (1 - alpha) * fill
    return _padded_texture(out, covered)


def _padded_texture(texture, covered):
    """(T, T, 3) float [0, 1] -> uint8, the UV charts padded by a few texels (inpainted) so that bilinear
    lookups at chart borders do not fetch black."""
    import cv2

    out8 = (np.clip(texture, 0, 1) * 255 + 0.5).astype(np.uint8)
    mask8 = covered.astype(np.uint8)
    ring = cv2.dilate(mask8, np.ones((9, 9), np.uint8)) & (1 - mask8)
    return cv2.inpaint(out8, ring, 3, cv2.INPAINT_TELEA) if ring.any() else out8


def merged_uv_texture(prepared, views, size=1024, feather_px=12, min_facing=0.2):
    """(size, size, 3) uint8 texture in the model's UV layout merged from several photos of one person.

    views: (V (N, 3) mm, camera, image (H, W, 3) uint8, depth (H, W) mm render of V (0 = none), mask (H, W)
    bool of the pixels that show the face, or None) per photo. Each face-area texel takes the mean of its colour in the photos that see it, weighted by how squarely
    its surface faces each camera (cos² of the angle between normal and view ray, from `min_facing` up);
    texels no photo sees (and the rest of the head) get the mean colour of the seen skin, blended in over
    `feather_px` texels."""
    import cv2

    model = prepared.model
    covered, tri, bary = prepared.uv_rasterisation(size)
    in_face = np.zeros(model.n_vertices, bool)
    in_face[prepared.face_area.domain] = True
    face_texels = in_face[model.faces[tri]].all(axis=1)
    f, b = model.faces[tri[face_texels]], bary[face_texels]
    acc = np.zeros((len(f), 3))
    wsum = np.zeros(len(f))
    for V, camera, image, depth, mask in views:
        img = np.asarray(image, np.float32) / 255.0
        Vc = camera.to_camera(V)
        n = vertex_normals(V, model.faces) @ camera.R.T
        facing_v = -(n * Vc).sum(1) / np.maximum(np.linalg.norm(Vc, axis=1), 1e-12)
        A = np.column_stack([Vc, facing_v])  # per vertex: camera-frame point and facing cosine
        T = b[:, 0:1] * A[f[:, 0]] + b[:, 1:2] * A[f[:, 1]] + b[:, 2:3] * A[f[:, 2]]
        z = np.maximum(T[:, 2], 1e-9)
        uv = camera.pixels(np.column_stack([T[:, :2], z]))
        H, W = img.shape[:2]
        seen = ((uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1) &
                (T[:, 3] > min_facing) & (T[:, 2] > 0))
        seen[seen] &= depth_visible(uv[seen], z[seen], depth, np.maximum(1.0, 0.004 * z[seen]), window=0)
        if mask is not None:
            px = np.rint(uv[seen]).astype(int)
            seen[seen] &= mask[px[:, 1], px[:, 0]]
        w = T[seen, 3] ** 2
        acc[seen] += w[:, None] * sample_image(img, uv[seen])[:, :3]
        wsum[seen] += w
    seen = wsum > 0
    photo = acc / np.maximum(wsum, 1e-12)[:, None]
    fill = photo[seen].mean(0) if seen.any() else np.full(3, 0.5)
    idx = np.flatnonzero(covered.ravel())[face_texels]  # the face texels' positions in the texture
    seen_img = np.zeros(size * size, np.uint8)
    seen_img[idx[seen]] = 1
    dist = cv2.distanceTransform(seen_img.reshape(size, size), cv2.DIST_L2, 3).ravel()
    alpha = np.clip(dist[idx] / feather_px, 0, 1)[:, None]
    out = np.zeros((size * size, 3), np.float32)
    out[covered.ravel()] = fill
    out[idx] = alpha * photo + (1 - alpha) * fill
    return _padded_texture(out.reshape(size, size, 3), covered)
