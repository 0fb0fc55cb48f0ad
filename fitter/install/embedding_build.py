"""Deriving a model's landmark embedding at install time, and measuring it.

No public table maps MediaPipe's 478 points to a face model, so it is measured:
1. render the painted model (`fitter.model.painting`: mean and random identities) over a yaw/pitch grid
   using the project's renderer;
2. detect landmarks on each render; read the surface point under each landmark from the index map
   (triangle id + barycentrics), expressed on the *mean* shape so identities can be pooled;
3. per landmark, pool the hits robustly (geometric median, MAD outlier rejection, grazing views
   dropped) and snap the result back onto the surface (closest point on the part most hits fell on);
4. face-contour landmarks are silhouette points and move with the view: they get one embedding per
   yaw bin (`fitter.model.embedding.LandmarkEmbedding.points` blends the two nearest bins).
Each landmark also gets a consistency weight from the spread of its hits, for the fits to use.
The accuracy report compares the 51 inner iBUG-68 equivalents with the model's own 68 vertices
(when the model has them) and reprojects the embedding on renders of held-out identities and poses.
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detection import landmarks as lmk
from ..errors import NoFaceError
from ..geometry.camera import look_at_face
from ..geometry.closest import MeshQuery
from ..geometry.mesh import interpolate
from ..geometry.render import get_renderer
from ..io import write_json_atomic
from ..model.embedding import EMBEDDING_FILE, LandmarkEmbedding
from ..model.morphable import MODEL_META, MorphableModel
from ..model.painting import DISTANCE_MM, FOCAL_PX, RENDER_BACKGROUND
from ..prepared import PreparedModel

TRAIN_YAWS = (-60, -45, -30, -15, 0, 15, 30, 45, 60)
TRAIN_PITCHES = (-15, 0, 15)
TEST_POSES = ((-52, 8), (-37, -10), (-22, 5), (-7, -5), (8, 10), (23, -8), (38, 6), (53, -4))
IMAGE_SIZE = 512


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
    from scipy.stats import median_abs_deviation  # here: scipy.stats takes 0.5 s to import

    mad = median_abs_deviation(d, scale="normal")  # the normal-consistent MAD, 1.4826… × median |d − median d|
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


@dataclass
class _Hits:
    """What the detector found on the training renders, expressed on the mean shape."""

    points: np.ndarray    # (views, 478, 3) mean-shape surface point under each landmark (NaN off the mesh)
    cosines: np.ndarray   # (views, 478) |cos| between the surface normal there and the view ray
    yaws: np.ndarray      # (views,) degrees
    n_views: int
    n_identities: int


def _detect_on_renders(prepared, n_identities, rng, progress):
    """Render the painted model (mean + `n_identities` random identities) over the training poses and
    detect landmarks on each render. Raises NoFaceError when the detector sees too few of them."""
    from tqdm import tqdm

    model = prepared.model
    F = prepared.render_faces
    albedo = prepared.painted_albedo
    ids = [np.zeros(model.n_identity)] + [model.random_coefficients(rng, 1.0)[0] for _ in range(n_identities)]
    poses = [(y, p) for y in TRAIN_YAWS for p in TRAIN_PITCHES]
    renderer = get_renderer()
    hits, cos, yaws = [], [], []
    n_views = len(ids) * len(poses)
    for k, yaw, pitch, V, cam, light in tqdm(_views(model, ids, poses, rng), total=n_views,
                                             disable=not (progress and sys.stderr.isatty()),
                                             desc="embedding landmarks", unit="view"):
        res = renderer.render(V, F, cam, vertex_colors=albedo, light_dir=light, background=RENDER_BACKGROUND)
        pts = _detect(res.color_uint8())
        if pts is None:
            continue
        P, c = _sample_mean_points(res, F, model.mean, pts)
        hits.append(P)
        cos.append(c)
        yaws.append(yaw)
    if len(hits) < max(3, n_views // 4):
        raise NoFaceError(f"the landmark detector found a face in only {len(hits)} of {n_views} renders of "
                          f"model '{model.name}': cannot derive its landmark embedding")
    return _Hits(np.stack(hits), np.stack(cos), np.asarray(yaws), n_views, len(ids))


def _pool(P_views):
    """(views, L, 3) hits -> robust centres (L, 3) (NaN where none) and their rms spread (L,)."""
    L = P_views.shape[1]
    centers = np.full((L, 3), np.nan)
    rms = np.full(L, np.inf)
    for i in range(L):
        c, _, r = _robust_center(P_views[:, i])
        if c is not None:
            centers[i], rms[i] = c, r
    return centers, rms


class _Snapper:
    """Closest surface point of the mean shape, on the part where most hits of each landmark fell."""

    def __init__(self, model, F):
        self.mean, self.F = model.mean, F
        self.parts = _triangle_parts(model, F)
        self.query = MeshQuery(model.mean, F)

    def snap(self, centers, P_views):
        cp = self.query.closest(np.nan_to_num(centers))
        tri, bary = cp.triangles.copy(), cp.barycentric.copy()
        parts = self.parts
        hit_cp = self.query.closest(np.nan_to_num(P_views.reshape(-1, 3)))
        hit_part = parts[hit_cp.triangles].reshape(P_views.shape[:2])
        for i in range(len(centers)):
            valid = np.isfinite(P_views[:, i]).all(1)
            if not valid.any():
                continue
            main = np.bincount(hit_part[valid, i]).argmax()
            if parts[tri[i]] != main:
                sub = np.flatnonzero(parts == main)
                q = MeshQuery(self.mean, self.F[sub]).closest(centers[i:i + 1])
                tri[i], bary[i] = sub[q.triangles[0]], q.barycentric[0]
        return tri, bary


def build_embedding(prepared, n_identities=4, seed=0, progress=True, log=print):
    """Derive the landmark embedding of `prepared.model` (see the module docstring). Returns a
    LandmarkEmbedding."""
    t0 = time.perf_counter()
    model = prepared.model
    rng = np.random.default_rng(seed)
    F_all, F = model.faces, prepared.render_faces
    tri_index = (np.flatnonzero(model.region_mask("render")[F_all].all(1)) if "render" in model.regions
                 else np.arange(len(F_all)))  # render triangle -> model triangle
    hits = _detect_on_renders(prepared, n_identities, rng, progress)
    snapper = _Snapper(model, F)
    contour = lmk.groups()["contour"]
    # non-contour landmarks: views up to 45 degrees, surface not seen at a grazing angle
    sel = np.abs(hits.yaws) <= 45
    P_in = hits.points[sel].copy()
    P_in[hits.cosines[sel] < 0.25] = np.nan
    centers, rms = _pool(P_in)
    tri, bary = snapper.snap(centers, P_in)
    # contour landmarks: one embedding per yaw bin
    c_tri = np.zeros((len(TRAIN_YAWS), len(contour)), np.int64)
    c_bary = np.zeros((len(TRAIN_YAWS), len(contour), 3))
    c_rms = np.zeros((len(TRAIN_YAWS), len(contour)))
    for b, yb in enumerate(TRAIN_YAWS):
        Pb = hits.points[hits.yaws == yb][:, contour]
        cb, rb = _pool(Pb)
        fallback = ~np.isfinite(cb).all(1)
        cb[fallback] = centers[contour][fallback]
        c_tri[b], c_bary[b] = snapper.snap(cb, Pb)
        c_rms[b] = rb
    rms[contour] = np.median(c_rms, axis=0)
    bad = ~np.isfinite(rms)
    rms[bad] = np.nanmax(rms[~bad]) if (~bad).any() else 10.0
    weights = 1.0 / (1.0 + (rms / 2.0) ** 2)
    emb = LandmarkEmbedding(
        triangles=tri_index[tri].astype(np.int64), barycentric=bary, spread_mm=rms, weights=weights / weights.max(),
        contour_ids=contour.astype(np.int64), contour_yaws=np.asarray(TRAIN_YAWS, float),
        contour_triangles=tri_index[c_tri].astype(np.int64), contour_barycentric=c_bary)
    n_found = len(hits.points)
    emb.report = {"views": int(hits.n_views), "views_detected": int(n_found), "identities": int(hits.n_identities),
                  "yaws": list(TRAIN_YAWS), "pitches": list(TRAIN_PITCHES), "image_size": IMAGE_SIZE,
                  "seed": int(seed), "build_seconds": round(time.perf_counter() - t0, 1),
                  "spread_mm_median": round(float(np.median(rms)), 2)}
    log(f"embedding built from {n_found}/{hits.n_views} views in {emb.report['build_seconds']} s")
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


def reprojection_errors(prepared, emb: LandmarkEmbedding, n_identities=3, seed=1000, progress=False):
    """Detect landmarks on renders of held-out identities and poses (TEST_POSES) and compare with the
    projected embedding: pixel errors (median / 90th percentile) for all, inner and contour points,
    the same normalised by the outer interocular distance, and the mean signed offset (px)."""
    model = prepared.model
    rng = np.random.default_rng(seed)
    F = prepared.render_faces
    albedo = prepared.painted_albedo
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
        iod = lmk.outer_interocular(proj)
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
    folder = Path(folder)
    meta = json.loads((folder / MODEL_META).read_text())
    prepared = PreparedModel(model, embedding=None)
    try:
        emb = build_embedding(prepared, seed=seed, progress=progress, log=log)
    except NoFaceError as e:
        meta["landmark_embedding"] = {"available": False, "reason": str(e)}
        write_json_atomic(folder / MODEL_META, meta)
        log(f"warning: {e}")
        return None
    report = dict(emb.report, available=True)
    ref = reference_distances(model, emb)
    if ref is not None:
        report["reference_68"] = ref
    report["reprojection"] = reprojection_errors(prepared, emb, progress=progress)
    emb.report = report
    emb.save(folder / EMBEDDING_FILE)
    meta["landmark_embedding"] = report
    write_json_atomic(folder / MODEL_META, meta)
    return emb
