"""Landmark embedding derived by the project: where each MediaPipe landmark lies on the model surface.

No public table maps MediaPipe's 478 points to a face model, so it is measured:
1. render the model (mean and random identities) over a yaw/pitch grid with a plausible albedo
   (skin, darker brows, red lips, white sclera, dark irises) using the project's renderer;
2. detect landmarks on each render; read the surface point under each landmark from the index map
   (triangle id + barycentrics), expressed on the *mean* shape so identities can be pooled;
3. per landmark, pool the hits robustly (geometric median, MAD outlier rejection, grazing views
   dropped) and snap the result back onto the surface (closest point on the part most hits fell on);
4. face-contour landmarks are silhouette points and move with the view: they get one embedding per
   yaw bin, and `points(..., yaw)` blends the two nearest bins linearly (still linear in V).
Each landmark also gets a consistency weight from the spread of its hits, for the fits to use.
The accuracy report compares the 51 inner iBUG-68 equivalents with the model's own 68 vertices
(when the model has them) and reprojects the embedding on renders of held-out identities and poses.
"""
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import landmarks as lmk
from .camera import look_at_face
from .closest import MeshQuery
from .errors import NoFaceError
from .io import save_npz_atomic, write_json_atomic
from .model import MODEL_META, MorphableModel
from .mesh import interpolate
from .render import get_renderer

EMBEDDING_FILE = "landmarks.npz"
TRAIN_YAWS = (-60, -45, -30, -15, 0, 15, 30, 45, 60)
TRAIN_PITCHES = (-15, 0, 15)
TEST_POSES = ((-52, 8), (-37, -10), (-22, 5), (-7, -5), (8, 10), (23, -8), (38, 6), (53, -4))
IMAGE_SIZE = 512
RENDER_BACKGROUND = (0.25, 0.25, 0.28)   # of the renders the embedding is measured on
FOCAL_PX = 900.0
DISTANCE_MM = 650.0

SKIN = np.array([0.80, 0.60, 0.50])
PART_COLORS = {  # albedo of model parts (by region name) for the renders
    "sclera_left": (0.88, 0.86, 0.82), "sclera_right": (0.88, 0.86, 0.82),
    "iris_left": (0.22, 0.15, 0.10), "iris_right": (0.22, 0.15, 0.10),
    "eye_socket_left": (0.35, 0.22, 0.20), "eye_socket_right": (0.35, 0.22, 0.20),
    "mouth_socket": (0.30, 0.08, 0.08), "gums_and_tongue": (0.55, 0.20, 0.22), "teeth": (0.85, 0.82, 0.74),
}
BROW_COLOR = np.array([0.22, 0.14, 0.09])
LIP_COLOR = np.array([0.66, 0.30, 0.30])


@dataclass
class LandmarkEmbedding:
    """Surface location of each of the 478 MediaPipe landmarks on a model's topology."""

    triangles: np.ndarray            # (478,) int64 triangle index into model.faces
    barycentric: np.ndarray          # (478, 3)
    spread_mm: np.ndarray            # (478,) RMS distance of the pooled hits to the result (mean shape)
    weights: np.ndarray              # (478,) consistency weight in (0, 1]
    contour_ids: np.ndarray          # (C,) MediaPipe indices with a yaw-dependent embedding
    contour_yaws: np.ndarray         # (Y,) degrees, increasing
    contour_triangles: np.ndarray    # (Y, C)
    contour_barycentric: np.ndarray  # (Y, C, 3)
    report: dict = field(default_factory=dict)

    def vertex_weights(self, faces, n_vertices, yaw_deg=0.0):
        """Sparse (478, N) matrix W with landmarks = W @ V, for the given view yaw (degrees)."""
        import scipy.sparse as sp

        tri = self.triangles.copy()
        bary = self.barycentric.copy()
        rows = [np.repeat(np.arange(478), 3)]
        cols = [faces[tri].ravel()]
        vals = [bary.ravel()]
        if len(self.contour_ids):
            (i0, i1), w = self._yaw_bins(yaw_deg)
            keep = np.ones(478, bool)
            keep[self.contour_ids] = False
            vals[0] = (bary * keep[:, None]).ravel()
            for i, s in ((i0, 1.0 - w), (i1, w)):
                if s == 0:
                    continue
                rows.append(np.repeat(self.contour_ids, 3))
                cols.append(faces[self.contour_triangles[i]].ravel())
                vals.append(s * self.contour_barycentric[i].ravel())
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(478, n_vertices))

    def _yaw_bins(self, yaw):
        ys = self.contour_yaws
        yaw = float(np.clip(yaw, ys[0], ys[-1]))
        i1 = int(np.clip(np.searchsorted(ys, yaw), 1, len(ys) - 1)) if len(ys) > 1 else 0
        i0 = max(i1 - 1, 0)
        w = 0.0 if i0 == i1 else (yaw - ys[i0]) / (ys[i1] - ys[i0])
        return (i0, i1), float(w)

    def points(self, V, faces, yaw_deg=0.0):
        """(478, 3) landmark positions on mesh V (model topology) for a view at `yaw_deg`."""
        return self.vertex_weights(faces, len(V), yaw_deg) @ np.asarray(V)

    def save(self, path):
        save_npz_atomic(path, triangles=self.triangles, barycentric=self.barycentric, spread_mm=self.spread_mm,
                        weights=self.weights, contour_ids=self.contour_ids, contour_yaws=self.contour_yaws,
                        contour_triangles=self.contour_triangles, contour_barycentric=self.contour_barycentric)

    @staticmethod
    def load(path, report=None):
        z = np.load(path)
        return LandmarkEmbedding(**{k: z[k] for k in z.files}, report=report or {})


def load_embedding(model: MorphableModel):
    """The embedding stored with an installed model (loaded once per model object), or None."""
    if "embedding" not in model.cache:
        folder = model.metadata.get("folder")
        path = Path(folder) / EMBEDDING_FILE if folder else None
        model.cache["embedding"] = (LandmarkEmbedding.load(path, model.metadata.get("landmark_embedding"))
                                    if path is not None and path.is_file() else None)
    return model.cache["embedding"]


# --- rendering the model for the detector ----------------------------------------------------
def painted_parts(model: MorphableModel):
    """(N,) part index per vertex of the model's painting: 0 skin, 1 brows, 2 lips, 3 any other part
    (eyeballs, teeth, ... by region). Brows and lips are painted around the model's own 68 landmark
    vertices when it has them."""
    labels = np.zeros(model.n_vertices, np.int64)
    for part in PART_COLORS:
        if part in model.regions:
            labels[model.regions[part]] = 3
    ref = model.metadata.get("reference_landmarks_68")
    if ref:
        V = model.mean
        face = model.regions.get("face", np.arange(model.n_vertices))
        Pf = V[face]
        L = V[np.asarray(ref)]
        up = _up_axis(L)
        for brow in (L[17:22], L[22:27]):
            labels[face[_brow_band(Pf, brow, up)]] = 1
        labels[face[_inside_outline(Pf, L[48:60], L, up)]] = 2
    return labels


def render_albedo(model: MorphableModel):
    """(N, 3) per-vertex albedo of `painted_parts`: skin, brows, lips, part colours by region, and the
    iris and pupil on the corneas. Made once per model object (0.3 s for ICT) and read-only."""
    if "render_albedo" not in model.cache:
        C = _paint_albedo(model)
        C.setflags(write=False)
        model.cache["render_albedo"] = C
    return model.cache["render_albedo"]


def _paint_albedo(model):
    C = np.tile(SKIN, (model.n_vertices, 1))
    for part, col in PART_COLORS.items():
        if part in model.regions:
            C[model.regions[part]] = col
    for side in ("left", "right"):
        _paint_cornea(model, C, side)
    labels = painted_parts(model)
    C[labels == 1] = BROW_COLOR
    C[labels == 2] = LIP_COLOR
    return C


def _paint_cornea(model, C, side, iris_radius_mm=5.8, pupil_radius_mm=2.2):
    """Paint an iris and pupil (anatomical radii) onto the front of the eyeball's outer (sclera/cornea)
    mesh, around the model's forward axis: the iris geometry sits under a transparent cornea."""
    sclera = f"sclera_{side}"
    if sclera not in model.regions:
        return
    idx = model.regions[sclera]
    S = model.mean[idx]
    center = S.mean(0)
    ref = model.metadata.get("reference_landmarks_68")
    axis = _frame(model.mean[np.asarray(ref)], _up_axis(model.mean[np.asarray(ref)]))[2] if ref else np.array([0, 0, 1.0])
    rel = S - center
    along = rel @ axis
    r = np.linalg.norm(rel - np.outer(along, axis), axis=1)
    front = along > 0
    C[idx[front & (r < iris_radius_mm)]] = PART_COLORS.get(f"iris_{side}", (0.22, 0.15, 0.10))
    C[idx[front & (r < pupil_radius_mm)]] = (0.04, 0.03, 0.03)


def _up_axis(L68):
    """Unit vector from chin (iBUG 8) towards the brows (mean of 17..26), in model space."""
    up = L68[17:27].mean(0) - L68[8]
    return up / np.linalg.norm(up)


def _frame(L68, up):
    right = L68[45] - L68[36]
    right -= up * (right @ up)
    right /= np.linalg.norm(right)
    fwd = np.cross(right, up)
    return right, up, fwd


def _brow_band(P, brow, up, above_mm=1.0, below_mm=7.0, half_width_extra_mm=3.0):
    """Vertices within a band hanging from the brow polyline (iBUG brow points run along the top of
    the brow): from `above_mm` above it to `below_mm` below, tapering to 60 % at the outer end."""
    seg_a, seg_b = brow[:-1], brow[1:]
    d = seg_b - seg_a
    rel = P[:, None, :] - seg_a[None]  # (P, S, 3)
    t = np.clip(np.einsum("psk,sk->ps", rel, d) / (d * d).sum(1)[None], 0, 1)
    closest = seg_a[None] + t[..., None] * d[None]
    dist = np.linalg.norm(P[:, None, :] - closest, axis=2)
    s = np.argmin(dist, axis=1)
    c = closest[np.arange(len(P)), s]
    off = P - c
    vertical = off @ up
    horiz = np.linalg.norm(off - np.outer(vertical, up), axis=1)
    pos = (s + t[np.arange(len(P)), s]) / len(d)  # 0 inner/outer end .. 1 other end, along the brow
    outer_first = abs(brow[0][0]) > abs(brow[-1][0])
    taper = np.where(outer_first, 0.6 + 0.4 * pos, 1.0 - 0.4 * pos)
    return (vertical <= above_mm) & (vertical >= -below_mm * taper) & (horiz <= half_width_extra_mm)


def _inside_outline(P, outline, L68, up):
    """Vertices whose frontal projection falls inside a closed landmark outline and that lie near it in depth."""
    import matplotlib.path as mpath  # noqa: F401  (matplotlib ships with the dependency set)

    right, up, fwd = _frame(L68, up)
    to2 = lambda X: np.stack([X @ right, X @ up], axis=1)  # noqa: E731
    inside = mpath.Path(to2(outline)).contains_points(to2(P))
    depth_ok = (P @ fwd) >= (outline @ fwd).min() - 6.0
    return inside & depth_ok


def _views(model, ids, poses, rng):
    """Yield (identity index, yaw, pitch, V, camera, light) for each identity and pose."""
    for k, alpha in enumerate(ids):
        V = model.shape(alpha)
        center = V[model.regions["face"]].mean(0) if "face" in model.regions else V.mean(0)
        for yaw, pitch in poses:
            dist = DISTANCE_MM * rng.uniform(0.9, 1.1)
            cam = look_at_face(center, yaw, pitch, dist, FOCAL_PX, IMAGE_SIZE, IMAGE_SIZE)
            light = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.5, 0.0), -1.0])
            yield k, yaw, pitch, V, cam, light


def _detect(image):
    try:
        return lmk.detect_landmarks(image)[0].points
    except NoFaceError:
        return None


def _render_faces(model):
    return model.faces_in("render") if "render" in model.regions else model.faces


def _sample_mean_points(res, F, mean, pts):
    """Mean-shape surface point under each landmark (bilinear over the 4 neighbouring pixel centres when
    they lie on one smooth patch, else the nearest pixel); NaN off the mesh. Also the view cosine."""
    H, W = res.depth.shape
    tri = res.triangle_id
    Pm = interpolate(mean, F, np.maximum(tri, 0).ravel(), res.barycentric.reshape(-1, 3)).reshape(H, W, 3)
    x0 = np.clip(np.floor(pts[:, 0]).astype(int), 0, W - 2)
    y0 = np.clip(np.floor(pts[:, 1]).astype(int), 0, H - 2)
    fx = np.clip(pts[:, 0] - x0, 0, 1)[:, None]
    fy = np.clip(pts[:, 1] - y0, 0, 1)[:, None]
    c = [(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)]
    P4 = np.stack([Pm[y, x] for y, x in c])
    ok4 = np.stack([tri[y, x] >= 0 for y, x in c])
    bil = (P4[0] * (1 - fx) * (1 - fy) + P4[1] * fx * (1 - fy) + P4[2] * (1 - fx) * fy + P4[3] * fx * fy)
    spread = np.max(np.linalg.norm(P4 - P4.mean(0), axis=2), axis=0)
    xn = np.clip(np.rint(pts[:, 0]).astype(int), 0, W - 1)
    yn = np.clip(np.rint(pts[:, 1]).astype(int), 0, H - 1)
    near = Pm[yn, xn]
    use_bil = ok4.all(0) & (spread < 2.0)
    out = np.where(use_bil[:, None], bil, near)
    on_mesh = tri[yn, xn] >= 0
    inside = (pts[:, 0] > -0.5) & (pts[:, 0] < W - 0.5) & (pts[:, 1] > -0.5) & (pts[:, 1] < H - 0.5)
    out[~(on_mesh & inside)] = np.nan
    n = res.normal[yn, xn]
    cosv = np.abs(n[:, 2])  # the camera looks along +z; |cos| of the angle between normal and view ray
    return out, cosv


def _robust_center(P, min_keep=3, k=3.0, floor_mm=1.5):
    """Geometric median of the finite rows of P with MAD rejection; returns (center, inlier mask, rms)."""
    ok = np.isfinite(P).all(1)
    X = P[ok]
    if len(X) == 0:
        return None, ok, np.inf
    c = np.median(X, axis=0)
    for _ in range(50):  # Weiszfeld
        d = np.maximum(np.linalg.norm(X - c, axis=1), 1e-6)
        c_new = (X / d[:, None]).sum(0) / (1 / d).sum()
        if np.linalg.norm(c_new - c) < 1e-4:
            c = c_new
            break
        c = c_new
    d = np.linalg.norm(X - c, axis=1)
    mad = 1.4826 * np.median(np.abs(d - np.median(d)))
    inl = d <= max(np.median(d) + k * mad, floor_mm)
    if inl.sum() >= min_keep:
        c = X[inl].mean(0)
    rms = float(np.sqrt(np.mean(np.linalg.norm(X[inl] - c, axis=1) ** 2))) if inl.any() else np.inf
    mask = np.zeros(len(P), bool)
    mask[np.flatnonzero(ok)[inl]] = True
    return c, mask, rms


def _triangle_parts(model, F):
    """Part label per triangle (index of the region its first vertex lies in; 0 when none)."""
    lab = np.zeros(model.n_vertices, np.int64)
    names = [n for n in model.metadata.get("render_parts_order", []) if n in model.regions]
    if not names:
        names = [n for n in ("face", "head_and_neck", "mouth_socket", "eye_socket_left", "eye_socket_right",
                             "gums_and_tongue", "teeth", "eyeball_left", "eyeball_right") if n in model.regions]
    for i, n in enumerate(names, start=1):
        lab[model.regions[n]] = i
    return lab[F[:, 0]]


def build_embedding(model: MorphableModel, n_identities=4, seed=0, progress=True, log=print):
    """Derive the landmark embedding of `model` (see module docstring). Returns a LandmarkEmbedding."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    F_all = model.faces
    F = _render_faces(model)
    tri_index = (np.flatnonzero(model.region_mask("render")[F_all].all(1)) if "render" in model.regions
                 else np.arange(len(F_all)))  # render triangle -> model triangle
    albedo = render_albedo(model)
    ids = [np.zeros(model.n_identity)] + [model.random_coefficients(rng, 1.0)[0] for _ in range(n_identities)]
    poses = [(y, p) for y in TRAIN_YAWS for p in TRAIN_PITCHES]
    renderer = get_renderer()
    hits, cos, yaws = [], [], []
    n_views = len(ids) * len(poses)
    missed = 0
    for k, yaw, pitch, V, cam, light in tqdm(_views(model, ids, poses, rng), total=n_views, disable=not (progress and sys.stderr.isatty()),
                                             desc="embedding landmarks", unit="view"):
        res = renderer.render(V, F, cam, vertex_colors=albedo, light_dir=light, background=RENDER_BACKGROUND)
        pts = _detect(res.color_uint8())
        if pts is None:
            missed += 1
            continue
        P, c = _sample_mean_points(res, F, model.mean, pts)
        hits.append(P)
        cos.append(c)
        yaws.append(yaw)
    if len(hits) < max(3, n_views // 4):
        raise NoFaceError(f"the landmark detector found a face in only {len(hits)} of {n_views} renders of "
                          f"model '{model.name}': cannot derive its landmark embedding")
    hits, cos, yaws = np.stack(hits), np.stack(cos), np.asarray(yaws)
    parts = _triangle_parts(model, F)
    query = MeshQuery(model.mean, F)
    contour = lmk.groups()["contour"]
    is_contour = np.zeros(478, bool)
    is_contour[contour] = True

    def pool(P_views):
        """(views, L, 3) -> centers (L, 3), rms (L,)"""
        L = P_views.shape[1]
        centers = np.full((L, 3), np.nan)
        rms = np.full(L, np.inf)
        for i in range(L):
            c, _, r = _robust_center(P_views[:, i])
            if c is not None:
                centers[i], rms[i] = c, r
        return centers, rms

    def snap(centers, P_views):
        """Closest surface point, on the part where most hits of each landmark fell."""
        cp = query.closest(np.nan_to_num(centers))
        tri, bary = cp.triangles.copy(), cp.barycentric.copy()
        hit_cp = query.closest(np.nan_to_num(P_views.reshape(-1, 3)))
        hit_part = parts[hit_cp.triangles].reshape(P_views.shape[:2])
        for i in range(len(centers)):
            valid = np.isfinite(P_views[:, i]).all(1)
            if not valid.any():
                continue
            main = np.bincount(hit_part[valid, i]).argmax()
            if parts[tri[i]] != main:
                sub = np.flatnonzero(parts == main)
                q = MeshQuery(model.mean, F[sub]).closest(centers[i:i + 1])
                tri[i], bary[i] = sub[q.triangles[0]], q.barycentric[0]
        return tri, bary

    # non-contour landmarks: views up to 45 degrees, surface not seen at a grazing angle
    sel = np.abs(yaws) <= 45
    P_in = hits[sel].copy()
    P_in[cos[sel] < 0.25] = np.nan
    centers, rms = pool(P_in)
    tri, bary = snap(centers, P_in)
    # contour landmarks: one embedding per yaw bin
    c_tri = np.zeros((len(TRAIN_YAWS), len(contour)), np.int64)
    c_bary = np.zeros((len(TRAIN_YAWS), len(contour), 3))
    c_rms = np.zeros((len(TRAIN_YAWS), len(contour)))
    for b, yb in enumerate(TRAIN_YAWS):
        Pb = hits[yaws == yb][:, contour]
        cb, rb = pool(Pb)
        fallback = ~np.isfinite(cb).all(1)
        cb[fallback] = centers[contour][fallback]
        c_tri[b], c_bary[b] = snap(cb, Pb)
        c_rms[b] = rb
    rms[contour] = np.median(c_rms, axis=0)
    bad = ~np.isfinite(rms)
    rms[bad] = np.nanmax(rms[~bad]) if (~bad).any() else 10.0
    weights = 1.0 / (1.0 + (rms / 2.0) ** 2)
    emb = LandmarkEmbedding(
        triangles=tri_index[tri].astype(np.int64), barycentric=bary, spread_mm=rms, weights=weights / weights.max(),
        contour_ids=contour.astype(np.int64), contour_yaws=np.asarray(TRAIN_YAWS, float),
        contour_triangles=tri_index[c_tri].astype(np.int64), contour_barycentric=c_bary)
    emb.report = {"views": int(n_views), "views_detected": int(len(hits)), "identities": int(len(ids)),
                  "yaws": list(TRAIN_YAWS), "pitches": list(TRAIN_PITCHES), "image_size": IMAGE_SIZE,
                  "seed": int(seed), "build_seconds": round(time.perf_counter() - t0, 1),
                  "spread_mm_median": round(float(np.median(rms)), 2)}
    log(f"embedding built from {len(hits)}/{n_views} views in {emb.report['build_seconds']} s")
    return emb


# --- accuracy ----------------------------------------------------------------------------------
def reference_distances(model: MorphableModel, emb: LandmarkEmbedding):
    """Distances (mm, mean shape, frontal contour bin) from the embedded iBUG-68 equivalents to the
    model's own 68 landmark vertices; None when the model has none."""
    ref = model.metadata.get("reference_landmarks_68")
    if not ref:
        return None
    P478 = emb.points(model.mean, model.faces, 0.0)
    d = np.linalg.norm(lmk.to_68(P478) - model.mean[np.asarray(ref)], axis=1)
    out = {"inner51_median_mm": float(np.median(d[17:68])), "inner51_mean_mm": float(np.mean(d[17:68])),
           "inner51_max_mm": float(np.max(d[17:68]))}
    for g, r in lmk.IBUG68_GROUPS.items():
        out[f"{g}_median_mm"] = float(np.median(d[list(r)]))
    out["per_point_mm"] = [round(float(x), 2) for x in d]
    return out


def reprojection_errors(model: MorphableModel, emb: LandmarkEmbedding, n_identities=3, seed=1000, progress=False):
    """Detect landmarks on renders of held-out identities and poses (TEST_POSES) and compare with the
    projected embedding: pixel errors (median / 90th percentile) for all, inner and contour points,
    the same normalised by the outer interocular distance, and the mean signed offset (px)."""
    rng = np.random.default_rng(seed)
    F = _render_faces(model)
    albedo = render_albedo(model)
    ids = [model.random_coefficients(rng, 1.0)[0] for _ in range(n_identities)]
    renderer = get_renderer()
    errs, nerrs, offs = [], [], []
    detected = 0
    for k, yaw, pitch, V, cam, light in _views(model, ids, TEST_POSES, rng):
        res = renderer.render(V, F, cam, vertex_colors=albedo, light_dir=light, background=RENDER_BACKGROUND)
        pts = _detect(res.color_uint8())
        if pts is None:
            continue
        detected += 1
        proj = cam.project(emb.points(V, model.faces, yaw))
        e = np.linalg.norm(pts - proj, axis=1)
        p68 = lmk.to_68(proj)
        iod = np.linalg.norm(p68[36] - p68[45])
        errs.append(e)
        nerrs.append(e / iod)
        offs.append((pts - proj).mean(0))
    n_views = n_identities * len(TEST_POSES)
    if not errs:
        return {"views": n_views, "views_detected": 0}
    E, NE = np.stack(errs), np.stack(nerrs)
    contour = np.zeros(478, bool)
    contour[emb.contour_ids] = True
    r = lambda x: round(float(x), 3)  # noqa: E731
    return {
        "views": n_views, "views_detected": detected, "image_size": IMAGE_SIZE,
        "poses": [list(p) for p in TEST_POSES], "seed": seed,
        "all_median_px": r(np.median(E)), "all_p90_px": r(np.percentile(E, 90)),
        "inner_median_px": r(np.median(E[:, ~contour])), "inner_p90_px": r(np.percentile(E[:, ~contour], 90)),
        "contour_median_px": r(np.median(E[:, contour])), "contour_p90_px": r(np.percentile(E[:, contour], 90)),
        "all_median_iod": r(np.median(NE)), "inner_median_iod": r(np.median(NE[:, ~contour])),
        "mean_offset_px": [r(x) for x in np.mean(offs, axis=0)],
    }


def build_and_store_embedding(model: MorphableModel, folder, seed=0, progress=True, log=print):
    """Build the embedding, measure it, and store landmarks.npz + the report in model.json of `folder`.

    When the detector cannot see the model's renders, the model stays usable for everything but
    landmark fitting and model.json says why.
    """
    import json

    folder = Path(folder)
    meta = json.loads((folder / MODEL_META).read_text())
    try:
        emb = build_embedding(model, seed=seed, progress=progress, log=log)
    except NoFaceError as e:
        meta["landmark_embedding"] = {"available": False, "reason": str(e)}
        write_json_atomic(folder / MODEL_META, meta)
        log(f"warning: {e}")
        return None
    report = dict(emb.report, available=True)
    ref = reference_distances(model, emb)
    if ref is not None:
        report["reference_68"] = ref
    report["reprojection"] = reprojection_errors(model, emb, progress=progress)
    emb.report = report
    emb.save(folder / EMBEDDING_FILE)
    meta["landmark_embedding"] = report
    write_json_atomic(folder / MODEL_META, meta)
    return emb
