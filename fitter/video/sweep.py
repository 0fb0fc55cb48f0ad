"""Multi-view photo-consistency along the surface normal (a plane sweep), and the shape moved towards it —
the medium stage for several views (`medium_stage`), run by fitter.video.reconstruct after the model-space
refinement (fitter.video.bundle) has made the views' cameras agree: from the landmark joint fit alone the
frames' poses disagree by 1-5 px and their focal lengths by 15 %, and on the mini-MICC videos the sweep's
offsets were noise (spread evenly over ±4 mm).

For each face-area vertex i of a shape seen by several calibrated views (the joint fit's cameras and
frames), candidate positions p_i(s) = v_i + s n_i, s in OFFSETS_MM, are projected into every view that
sees the vertex — the renderer's depth test on the view's own mesh, and facing the camera by more than
MIN_COS — and a PATCH×PATCH patch in the tangent plane, PATCH_MM apart, is sampled there (luminance,
bilinear). The consistency at s is the mean normalised cross-correlation (NCC) of each view's patch with
the mean of the views' normalised patches: NCC removes each view's gain and bias (light, exposure), so no
albedo or lighting model enters. The offset is the argmax over s, refined by a parabola through its
neighbours; its confidence is the peak's NCC above the best NCC more than two steps away from it, zero
where the peak is under MIN_PEAK_NCC, for vertices seen by fewer than MIN_VIEWS views, and where the
patches have no texture (standard deviation under MIN_STD).

The shape then moves towards the confident targets t_i = v_i + s_i n_i:
    argmin_D  λ ||L D||² + Σ_i w_i ||D_i − s_i n_i||²,   V' = V + D,
L the project's uniform Laplacian of the face area (fitter.geometry.mesh.uniform_laplacian), w_i the confidence:
(λ LᵀL + W) D = W S, one sparse SPD solve with CHOLMOD (fitter.geometry.cholesky), the pattern analysed once per
PreparedModel-sized face area. One displacement for the identity, shared by all views.
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..geometry.camera import Camera
from ..geometry.cholesky import FactorCache
from ..geometry.mesh import tangent_frames, uniform_laplacian, vertex_normals
from ..geometry.render import depth_visible, get_renderer
from ..photo.texture import luma, sample_image

OFFSETS_MM = np.linspace(-4.0, 4.0, 17)  # the sweep, along the normal (0.5 mm steps)
PATCH = 3                                # samples per side of the tangent-plane patch
PATCH_MM = 1.2                           # their spacing
MIN_COS = 0.3                            # a view votes for a vertex it sees within ~72° of square on
MIN_VIEWS = 2
MIN_PEAK_NCC = 0.5                       # a peak less consistent than this is no evidence
MIN_STD = 0.01                           # luminance (0-1): a patch flatter than this in every view carries nothing
MIN_CONFIDENT_FRACTION = 0.45            # the stage moves the mesh only where this much of the face area is
                                         # confident (exact views with skin texture: 0.75; one skin tone and the
                                         # painted or untextured mini-MICC renders: 0.28-0.44, offsets spread like
                                         # noise; the skin-textured mini MICC indoors: 0.49-0.52, where it helped)
MIN_SAMPLE_PX = 1.5                      # and only where the patch samples lie this far apart in the views (the
                                         # skin-textured mini MICC: it helped at 2.1 px, Indoor-Cooperative, and
                                         # harmed at 1.0 px, PTZ-Indoor)
SMOOTHNESS = 20.0                        # λ of the deformation: a 3 mm bump of σ 12 mm is recovered (tests);
                                         # 100 gains 0.07 mm more on a whole identity but flattens such a bump


@dataclass
class View:
    """One calibrated view of the shape."""

    image: np.ndarray    # (H, W, 3) uint8
    camera: Camera       # model frame -> the view's camera
    vertices: np.ndarray  # (N, 3) the shape as this view sees it (its expression), model frame, mm


@dataclass
class SweepResult:
    offsets: np.ndarray     # (n,) mm along the normal, per face-area vertex (0 where not confident)
    confidence: np.ndarray  # (n,) >= 0
    views_seen: np.ndarray  # (n,) how many views voted
    ncc: np.ndarray         # (n, S) the consistency curve per vertex (NaN: fewer than MIN_VIEWS views)


def visible_in(view: View, faces, vertex_ids, normals):
    """(n,) bool: which of `vertex_ids` the view sees (in the image, not hidden: the project's depth test on
    the view's own mesh; facing the camera by more than MIN_COS)."""
    cam = view.camera
    depth = get_renderer().render(view.vertices, faces, cam).depth
    P = cam.to_camera(view.vertices[vertex_ids])
    uv = cam.project(view.vertices[vertex_ids])
    cos = -(normals @ cam.R.T * P).sum(1) / np.linalg.norm(P, axis=1)
    return (cos > MIN_COS) & depth_visible(uv, P[:, 2], depth, np.maximum(1.5, 0.004 * P[:, 2]), window=1)


def sweep(views, faces, vertex_ids, offsets=OFFSETS_MM):
    """The plane sweep (see the module docstring) for the vertices `vertex_ids` (n,) of the views' shapes
    (model topology, `faces` the triangles the renderer draws). Returns a SweepResult."""
    offsets = np.asarray(offsets, float)
    n, S, P = len(vertex_ids), len(offsets), PATCH * PATCH
    g = (np.arange(PATCH) - (PATCH - 1) / 2) * PATCH_MM
    ga, gb = (a.ravel() for a in np.meshgrid(g, g))
    sums = np.zeros((n, S, P))
    patches, seen = [], []
    for view in views:
        normals = vertex_normals(view.vertices, faces)[vertex_ids]
        vis = visible_in(view, faces, vertex_ids, normals)
        t1, t2 = tangent_frames(normals)
        base = view.vertices[vertex_ids]
        # (n, S, P, 3): the patch at every offset, model frame
        Q = (base[:, None, None] + offsets[None, :, None, None] * normals[:, None, None]
             + ga[None, None, :, None] * t1[:, None, None] + gb[None, None, :, None] * t2[:, None, None])
        gray = (luma(np.asarray(view.image, np.float32)) / 255.0).astype(np.float32)
        x = sample_image(gray, view.camera.project(Q.reshape(-1, 3)))[:, 0].reshape(n, S, P).astype(np.float64)
        x -= x.mean(2, keepdims=True)
        std = np.sqrt((x ** 2).mean(2, keepdims=True))
        textured = std[..., 0] > MIN_STD
        x /= np.maximum(std, MIN_STD)
        ok = vis[:, None] & textured
        x[~ok] = 0.0
        patches.append(x)
        seen.append(ok)
        sums += x
    seen = np.stack(seen)                      # (V, n, S)
    count = seen.sum(0)                        # (n, S)
    mean = sums / np.maximum(count, 1)[..., None]
    mean -= mean.mean(2, keepdims=True)
    mean /= np.maximum(np.sqrt((mean ** 2).mean(2, keepdims=True)), 1e-9)
    ncc = sum((x * mean).mean(2) for x in patches) / np.maximum(count, 1)  # views that did not see add 0
    ncc = np.where(count >= MIN_VIEWS, ncc, np.nan)
    valid = ~np.isnan(ncc).any(1)
    best = np.zeros(n, int)
    best[valid] = np.argmax(ncc[valid], axis=1)
    # sub-sample peak: a parabola through the best offset and its neighbours
    step = offsets[1] - offsets[0] if S > 1 else 0.0
    inner = valid & (best > 0) & (best < S - 1)
    rows = np.flatnonzero(inner)
    y0, y1, y2 = (ncc[rows, best[rows] + k] for k in (-1, 0, 1))
    curv = y0 - 2 * y1 + y2
    shift = np.where(curv < 0, 0.5 * (y0 - y2) / np.where(curv < 0, curv, -1.0), 0.0)
    out = np.zeros(n)
    out[valid] = offsets[best[valid]]
    out[rows] += np.clip(shift, -0.5, 0.5) * step
    # confidence: how far the peak stands above the best consistency away from it (more than 2 steps off)
    peak = np.zeros(n)
    peak[valid] = ncc[valid, best[valid]]
    away = np.abs(np.arange(S)[None, :] - best[:, None]) > 2
    rival = np.max(np.where(away, np.nan_to_num(ncc, nan=-1.0), -1.0), axis=1)
    conf = np.where(valid & (peak >= MIN_PEAK_NCC), np.clip(peak - rival, 0.0, None), 0.0)
    out[conf == 0] = 0.0
    return SweepResult(out, conf, count.max(1), ncc)


class ShapeDeformer:
    """The deformation towards dense normal offsets on one face-area mesh (F_local, n vertices): the
    Laplacian and the CHOLMOD analysis of λ LᵀL + diag(w), built once; one numeric factorisation per call."""

    def __init__(self, F_local, n_vertices, smoothness=SMOOTHNESS):
        L = uniform_laplacian(F_local, n_vertices)
        self.LtL = (L.T @ L).tocsc()
        self.smoothness = float(smoothness)
        self.factors = FactorCache(self.smoothness * self.LtL + sp.eye(n_vertices), max_factors=1)

    def displacement(self, normals, offsets, weights):
        """(n, 3) D minimising λ ||L D||² + Σ w_i ||D_i − offsets_i normals_i||² (see the module docstring)."""
        w = np.asarray(weights, float)
        if not (w > 0).any():
            return np.zeros_like(np.asarray(normals, float))
        A = lambda: self.smoothness * self.LtL + sp.diags(w)  # noqa: E731 - built on a cache miss only
        D, _ = self.factors.solve(w.tobytes(), A, w[:, None] * np.asarray(offsets, float)[:, None] * normals)
        return D


def patch_spacing_px(cameras, vertices):
    """The median over views of the sweep patch's sample spacing (PATCH_MM) in pixels at the face: focal
    length × PATCH_MM / the depth of the face area's centre. vertices: (N, 3) the shape per view."""
    return float(np.median([c.focal * PATCH_MM / c.to_camera(V.mean(0, keepdims=True))[0, 2]
                            for c, V in zip(cameras, vertices)]))


def medium_stage(prepared, images, cameras, identity, expressions, smoothness=SMOOTHNESS,
                 min_confident=MIN_CONFIDENT_FRACTION, min_sample_px=MIN_SAMPLE_PX):
    """The medium stage for several views: the sweep over the face area of the identity seen by each view
    (image (H, W, 3) uint8, Camera, its expression (E,)), and the displacement towards its confident
    offsets — applied only where the face is large enough that the sweep's patch samples lie at least
    `min_sample_px` apart, and at least `min_confident` of the face area has a confident peak (else the
    sweep found little texture to agree on, and D is zero). Returns (D (N, 3) mm on the model's vertices,
    zero off the face area; info dict)."""
    model, area, F = prepared.model, prepared.face_area, prepared.render_faces
    views = [View(im, cam, model.shape(identity, e)) for im, cam, e in zip(images, cameras, expressions)]
    spacing = patch_spacing_px(cameras, [v.vertices[area.domain] for v in views])
    if spacing < min_sample_px:
        return np.zeros((model.n_vertices, 3)), {
            "applied": False, "patch_sample_px": round(spacing, 3),
            "reason": f"the face is too small for the sweep: its {PATCH_MM} mm patch samples are {spacing:.2f} px "
                      f"apart (< {min_sample_px}), where image noise decides the peaks"}
    s = sweep(views, F, area.domain)
    confident = s.confidence > 0
    # recorded, not gated on: confident / seen does not separate untextured videos (0.59-0.64) from the
    # skin-textured photo pairs (0.42-0.69) that the whole-area fraction declines
    seen = s.views_seen >= MIN_VIEWS
    info = {"patch_sample_px": round(spacing, 3), "confident_fraction": round(float(confident.mean()), 4),
            "seen_fraction": round(float(seen.mean()), 4),
            "median_offset_mm": round(float(np.median(np.abs(s.offsets[confident]))), 4) if confident.any() else 0.0}
    if confident.mean() < min_confident:
        info.update(applied=False, reason=f"{100 * confident.mean():.0f} % of the face area has a confident "
                                          f"offset (< {100 * min_confident:.0f} %): too little texture")
        return np.zeros((model.n_vertices, 3)), info
    neutral = model.shape(identity, np.zeros(model.n_expression))
    D = area.extend(ShapeDeformer(area.F_local, len(area.domain), smoothness).displacement(
        vertex_normals(neutral, model.faces)[area.domain], s.offsets, s.confidence))
    info.update(applied=True, max_displacement_mm=round(float(np.linalg.norm(D, axis=1).max()), 4))
    return D, info
