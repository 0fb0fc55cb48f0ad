"""Fine stage: shape-from-shading refinement of the medium mesh's depth (S2 §3.4 Eq. 4-9, S0 Eq. 3-4).

In S2's order, on a square crop of the face (at most `FineConfig.crop_px` pixels a side):
1. render the medium mesh to a depth map d₀ (mm) with the crop camera; unknowns are the depths of the
   refined region's skin pixels away from its border and from occluding edges (those keep d₀, so the
   refined region joins the rest);
2. normals from depth: the points X = d·K⁻¹[u, v, 1] of a pixel and its right and lower neighbours
   give n = (X_down − X) × (X_right − X), normalised (camera frame, pointing at the camera);
3. lighting: 9 SH coefficients per channel by linear least squares, I = γ ⊙ Y(n) L, with the mean
   albedo γ̄ (per-region average colour from the face parsing) and no specular (Eq. 5);
4. albedo (Eq. 6): per channel, minimise ‖γ S − I‖² + λγ1 ‖γ − γ̄‖² + λγ2 RTV(γ), the RTV term by
   reweighting (fitter.geometry.rtv), each reweighted system solved by preconditioned conjugate gradients;
5. specular (Eq. 8): a white, non-negative layer β kept near β₀, the positive part of the low-passed
   photometric residual; it takes broad highlights out of the depth's data term;
6. depth (Eq. 9): E(d) = Σ_skin ρ(luma(γ ⊙ Y(n(d)) L + β − I)) + λd1 ‖d − d₀‖² + λd2 ‖∇²d‖²
   + λd3 ‖∇I − λd4 ∇h‖² (h = −d, height towards the camera), ρ a Cauchy weighting set once per phase
   (IRLS) so that what the shading model cannot explain stops pulling; solved by Ceres (pyceres)
   Levenberg-Marquardt in S2's two phases for two detail scales: the first on a half-resolution grid,
   its change upsampled as the start of the second at full resolution; albedo and specular are
   re-estimated between the phases from the new normals.
Only pixels labelled skin by the face parsing and covered by the model's skin drive the depth (hair,
brows, eyes, lips, inner mouth do not; the parsing has no glasses class, see BENCHMARKS.md).

Write-back: the model mesh (median edge 2.8 mm on ICT's face) cannot hold wrinkle-scale detail, so the
refined depth is kept at pixel resolution (`depth`, written as depth_refined.png and detail.obj), and
the mesh gets what its vertices can carry: each visible vertex of the refined region is displaced along
its normal by the refined depth change under it (feathered to zero at the region's border).

The maths is in `fitter.photo.fine.geometry` and `fitter.photo.fine.photometric`, the Ceres problem in
`fitter.photo.fine.ceres_tiles`; this module is the stage: its configuration, crop, order of steps and
result.
"""
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from ...detection.segment import FaceLabel
from ...errors import InputError
from ...geometry.camera import Camera, crop_image, square_box
from ...geometry.mesh import vertex_normals
from ...geometry.render import depth_visible, get_renderer
from .ceres_tiles import DepthProblem
from .geometry import depth_discontinuities, depth_normals, surface_normals
from .photometric import fit_albedo, fit_lighting, fit_specular, image_gradients, region_average_albedo, shading


@dataclass
class FineConfig:
    crop_px: int = 256                 # crop side (the face is not upsampled beyond its image size)
    margin: float = 0.06               # crop margin around the face-area box, fraction of its side
    border_px: int = 2                 # face-area pixels this close to its border keep d₀
    discontinuity_mm: float = 4.0      # a depth step larger than this between neighbours is an occlusion edge
    # albedo (Eq. 6) and specular (Eq. 8): S2 §4.1's weights on [0, 1] colours
    albedo_avg: float = 0.3            # λγ1
    albedo_rtv: float = 2.5            # λγ2 (scaled by the RTV weights' mean, see fit_albedo)
    rtv_sigma: float = 2.0             # px
    specular_reg: float = 0.5          # λβ
    specular_sigma: float = 4.0        # px, the low-pass of β₀
    albedo_iterations: int = 1         # RTV reweightings before the first depth phase (and 1 after it)
    # depth (Eq. 9), two phases (λd1, λd2, λd3, λd4) in mm / [0, 1] colour units; phase 1 runs at
    # phase1_scale × the crop's resolution, phase 2 at full resolution. λd3 = 0: S2's gradient matching
    # (0.001/0.001, then 0.025/2.5) made the normals worse here (12.5° -> 17.4°, BENCHMARKS.md)
    phases: tuple = ((0.0005, 0.002, 0.0, 0.0), (0.0002, 0.001, 0.0, 0.0))
    iterations: tuple = (3, 1)         # LM iterations per phase
    phase1_scale: float = 0.5          # grid of phase 1 relative to the crop (1: both phases on one problem;
                                       # measured 1.9× slower for the same accuracy, see BENCHMARKS.md)
    robust_scale: float = 2.0          # Cauchy scale of the photometric rows in robust σ (0: plain least squares)
    highlight_scale: float = 0.0       # > 0: photometric rows weighted by 1/√(1 + (β/this)²), β the specular layer
    linear_solver: str = "SPARSE_NORMAL_CHOLESKY"


@dataclass
class FineResult:
    vertices: np.ndarray               # (N, 3) refined mesh, model frame, mm
    camera: Camera                     # the crop camera (same R, t as the fit; K of the crop)
    crop_box: tuple                    # (x0, y0, side) of the crop in the photo, pixels
    depth0: np.ndarray                 # (h, w) medium depth, mm (0 off the face area)
    depth: np.ndarray                  # (h, w) refined depth, mm
    unknown: np.ndarray                # (h, w) bool: pixels whose depth was solved
    skin: np.ndarray                   # (h, w) bool: pixels that drive the depth
    sh: np.ndarray                     # (9, 3) SH lighting
    albedo: np.ndarray                 # (h, w, 3)
    specular: np.ndarray               # (h, w)
    photometric_rms_before: float      # over the skin pixels, [0, 1] colour units
    photometric_rms_after: float
    seconds: float
    times: dict = field(default_factory=dict)
    solver: list = field(default_factory=list)   # per phase: Ceres summary figures

    def normals(self):
        """(h, w, 3) unit normals of the refined depth (camera frame) and (h, w) bool where they are
        defined (the pixel and its right and lower neighbours on the surface)."""
        d = self.depth
        ok = d > 0
        valid = ok.copy()
        valid[:, :-1] &= ok[:, 1:]
        valid[:-1] &= ok[1:]
        valid[-1] = valid[:, -1] = False
        return depth_normals(d, self.camera), valid

    def to_dict(self):
        return {"seconds": round(self.seconds, 4), "crop_box": [int(v) for v in self.crop_box],
                "crop_K": self.camera.K.round(6).tolist(), "unknowns": int(self.unknown.sum()),
                "skin_pixels": int(self.skin.sum()),
                "photometric_rms_before": round(self.photometric_rms_before, 6),
                "photometric_rms_after": round(self.photometric_rms_after, 6),
                "sh": self.sh.round(6).tolist(),
                "depth_change_mm_p95": round(float(np.percentile(np.abs(self.depth - self.depth0)[self.unknown], 95))
                                             if self.unknown.any() else 0.0, 4),
                "times_s": {k: round(v, 4) for k, v in self.times.items()}, "ceres": self.solver}


def refined_region(model):
    """Name of the model region the stage refines: the front of the face (`MorphableModel.front_region`)."""
    return model.front_region()


def _skin_triangles(model, F):
    """(len(F),) bool: triangles of F in the refined region (face skin: no eyeballs, mouth interior)."""
    return model.region_mask(refined_region(model))[F].all(axis=1)


@dataclass
class _Crop:
    """One scale of the stage's crop: image, labels, camera and the medium depth with its masks."""

    image: np.ndarray      # (n, n, 3) float in [0, 1]
    labels: np.ndarray     # (n, n) uint8 FaceLabel
    camera: Camera
    depth0: np.ndarray     # (n, n) mm, 0 off the refined region
    known: np.ndarray      # surface pixels of the refined region (occlusion edges removed)
    unknown: np.ndarray    # pixels whose depth is solved
    skin: np.ndarray       # pixels that drive the depth


def _crop_scale(prepared, V, camera, image, labels, box, size, cfg, pixel_scale=1.0):
    """The crop at `size` pixels; pixel_scale: this scale's pixel size over the full crop's (for the
    occlusion-edge threshold)."""
    model, F = prepared.model, prepared.render_faces
    crop, A = crop_image(image, box, size)
    lab = cv2.warpAffine(np.asarray(labels, np.uint8), A[:2], (size, size), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cam = camera.cropped(A, size)
    res = get_renderer().render(V, F, cam)
    known = res.mask & _skin_triangles(model, F)[np.maximum(res.triangle_id, 0)]
    known &= ~depth_discontinuities(np.where(known, res.depth, 0.0), cfg.discontinuity_mm * pixel_scale)
    depth0 = np.where(known, res.depth, 0.0).astype(float)
    kernel = np.ones((3, 3), np.uint8)
    unknown = cv2.erode(known.astype(np.uint8), kernel, iterations=cfg.border_px).astype(bool)
    skin = cv2.erode((known & (lab == FaceLabel.SKIN)).astype(np.uint8), kernel, iterations=1).astype(bool)
    # pixels far from any skin (brows, lips, eyes, nostrils) have no photometric evidence: they keep d₀
    unknown &= cv2.dilate(skin.astype(np.uint8), kernel, iterations=cfg.border_px).astype(bool)
    return _Crop(crop.astype(float) / 255.0, lab, cam, depth0, known, unknown, skin)


def refine_depth(prepared, V, camera: Camera, image, labels, config: FineConfig = None):
    """Fine stage for one face. prepared: the PreparedModel; V: (N, 3) medium mesh (model frame, mm);
    camera: its fitted camera; image: (H, W, 3) uint8 photo; labels: (H, W) face parsing
    (fitter.detection.segment.FaceLabel). Returns a FineResult. Raises InputError when the face is too small or
    shows no skin.

    The two depth phases are S2's two detail scales: the first solves on a coarser grid (larger
    wrinkles and the shape's own errors, cheaply), the second at full resolution from the upsampled
    result (fine detail), each with its own weights."""
    cfg = config or FineConfig()
    model = prepared.model
    t_start = time.perf_counter()
    times = {}
    face_pts = camera.project(V[model.region(refined_region(model))])
    box = square_box(face_pts, cfg.margin, whole_pixels=True)
    size = int(min(cfg.crop_px, box[2]))
    if size < 32:
        raise InputError(f"the face is {box[2]} px across; the fine stage needs at least 32 px")
    full = _crop_scale(prepared, V, camera, image, labels, box, size, cfg)
    if full.skin.sum() < 200 or full.unknown.sum() < 200:
        raise InputError("too little visible skin for shape from shading (fewer than 200 pixels)")
    times["prepare_s"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    photo = _first_photometry(full, cfg)
    times["albedo_light_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gradient_term = any(lam[2] > 0 for lam in cfg.phases)
    problem = DepthProblem(full.depth0, full.known, full.unknown, full.skin, full.camera, full.image,
                           image_gradients(full.image), gradient_term=gradient_term)
    solver = [_depth_phase_1(prepared, V, camera, image, labels, box, full, problem, photo, cfg)]
    times["depth_phase_1_s"] = time.perf_counter() - t0

    # albedo and specular again from the new normals (S2 alternates), then phase 2 at full resolution
    t0 = time.perf_counter()
    _, shade = shading(problem.z, full.camera, photo.sh, full.known)
    photo.albedo = fit_albedo(full.image, np.clip(shade, 1e-3, None), photo.average, photo.region, cfg.albedo_avg,
                              cfg.albedo_rtv, cfg.rtv_sigma, iterations=1, start=photo.albedo)
    photo.specular = fit_specular(full.image, photo.albedo * shade, full.skin, cfg.specular_reg, cfg.specular_sigma)
    times["albedo_update_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    problem.set_terms(photo.sh, photo.albedo, photo.specular, cfg.phases[1])
    problem.set_photo_weights(cfg.robust_scale, cfg.highlight_scale)
    rms_before = problem.photometric_rms(full.depth0.ravel()[problem.upix])  # the medium depth, final model
    solver.append(problem.solve(cfg.iterations[1], cfg.linear_solver))
    rms_after = problem.photometric_rms()
    depth = np.where(full.known, problem.z, 0.0)
    times["depth_phase_2_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    V_new = displace_vertices(model, V, full.camera, full.depth0, depth, full.unknown)
    times["write_back_s"] = time.perf_counter() - t0
    return FineResult(V_new, full.camera, box, full.depth0, depth, full.unknown, problem.photo, photo.sh,
                      photo.albedo, photo.specular, rms_before, rms_after, time.perf_counter() - t_start, times,
                      solver)


@dataclass
class _Photometry:
    """The lighting, albedo and specular layer of the crop, with what the albedo term needs."""

    sh: np.ndarray         # (9, 3) SH lighting
    albedo: np.ndarray     # (h, w, 3)
    specular: np.ndarray   # (h, w)
    average: np.ndarray    # (h, w, 3) γ̄, the per-region average albedo
    region: np.ndarray     # (h, w) bool: the parsed face pixels of the refined surface


def _first_photometry(full: _Crop, cfg: FineConfig):
    """Lighting with the mean albedo (Eq. 5, ε = 0), then albedo (Eq. 6), lighting again, and specular
    (Eq. 8), all at the medium depth."""
    camera = full.camera
    region = full.known & (full.labels > 0)
    n0 = surface_normals(full.depth0, camera, full.known)
    flat = region_average_albedo(full.image, np.ones_like(full.image), full.labels, region)
    sh = fit_lighting(n0, full.image, flat, full.skin)
    _, shade = shading(full.depth0, camera, sh, full.known)
    avg = region_average_albedo(full.image, np.clip(shade, 1e-3, None), full.labels, region)
    albedo = fit_albedo(full.image, np.clip(shade, 1e-3, None), avg, region, cfg.albedo_avg, cfg.albedo_rtv,
                        cfg.rtv_sigma, iterations=cfg.albedo_iterations)
    sh = fit_lighting(n0, full.image, albedo, full.skin)
    _, shade = shading(full.depth0, camera, sh, full.known)
    specular = fit_specular(full.image, albedo * shade, full.skin, cfg.specular_reg, cfg.specular_sigma)
    return _Photometry(sh, albedo, specular, avg, region)


def _depth_phase_1(prepared, V, camera, image, labels, box, full: _Crop, problem: DepthProblem,
                   photo: _Photometry, cfg: FineConfig):
    """Phase 1 of the depth: on a coarser grid (its own problem) when phase1_scale < 1, its depth change
    upsampled into `problem` as phase 2's start; else on `problem` itself. Returns Ceres's summary."""
    size = full.depth0.shape[0]
    if cfg.phase1_scale >= 1.0:
        problem.set_terms(photo.sh, photo.albedo, photo.specular, cfg.phases[0])
        problem.set_photo_weights(cfg.robust_scale, cfg.highlight_scale)
        return problem.solve(cfg.iterations[0], cfg.linear_solver)
    n1 = max(int(round(size * cfg.phase1_scale)), 16)
    low = _crop_scale(prepared, V, camera, image, labels, box, n1, cfg, pixel_scale=size / n1)
    down = lambda x: cv2.resize(x, (n1, n1), interpolation=cv2.INTER_AREA)  # noqa: E731
    p1 = DepthProblem(low.depth0, low.known, low.unknown, low.skin, low.camera, low.image,
                      image_gradients(low.image), gradient_term=problem.ROWS == 5)
    p1.set_terms(photo.sh, down(photo.albedo), down(photo.specular), cfg.phases[0])
    p1.set_photo_weights(cfg.robust_scale, cfg.highlight_scale)
    summary = p1.solve(cfg.iterations[0], cfg.linear_solver)
    delta = np.where(low.unknown, p1.z - low.depth0, 0.0).astype(np.float32)
    up = cv2.resize(delta, (size, size), interpolation=cv2.INTER_LINEAR)
    problem.z[:] = np.where(full.unknown, full.depth0 + up, full.depth0)
    return summary


def displace_vertices(model, V, camera: Camera, depth0, depth, region, feather_px=6.0):
    """Move each face-area vertex seen in `region` along its normal by the refined depth change under
    it (bilinear), feathered to zero over `feather_px` at the region's border. Returns (N, 3)."""
    V = np.asarray(V, float)
    idx = model.region(refined_region(model))
    Xc = camera.to_camera(V[idx])
    uv = camera.project(V[idx])
    h, w = depth.shape
    delta = np.where(region, depth - depth0, 0.0).astype(np.float32)
    dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    feather = np.clip(dist / feather_px, 0.0, 1.0).astype(np.float32)
    d = cv2.remap(delta * feather, uv[:, 0].astype(np.float32), uv[:, 1].astype(np.float32), cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)[:, 0]
    vis = depth_visible(uv, Xc[:, 2], np.where(region, depth0, 0.0), np.maximum(1.0, 0.004 * Xc[:, 2]), window=0)
    d = np.where(vis, d, 0.0)
    n = vertex_normals(V, model.faces)[idx]
    nc = n @ camera.R.T
    ray = Xc / np.linalg.norm(Xc, axis=1, keepdims=True)
    # a depth change Δz moves the surface point along the ray by Δz·|K⁻¹[u,v,1]|; along the normal that is
    # −Δz·|r|·|r̂·n| (positive Δz: away from the camera, i.e. into the face)
    rlen = np.linalg.norm(Xc / Xc[:, 2:3], axis=1)
    h_out = -d * rlen * np.abs((ray * nc).sum(1))
    out = V.copy()
    out[idx] += h_out[:, None] * n
    return out


def detail_mesh(result: FineResult):
    """The refined depth as a pixel-grid triangle mesh (camera frame, mm): (vertices (M, 3), faces (T, 3)),
    one vertex per face-area pixel, two triangles per 2×2 block of them — the stage's full-resolution output."""
    d = result.depth
    h, w = d.shape
    ok = d > 0
    idx = np.full(d.shape, -1, np.int64)
    idx[ok] = np.arange(ok.sum())
    X = (d[..., None] * result.camera.image_rays(h, w))[ok]
    a, b, c, e = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    quad = (a >= 0) & (b >= 0) & (c >= 0) & (e >= 0)
    F = np.concatenate([np.stack([a[quad], c[quad], b[quad]], 1), np.stack([b[quad], c[quad], e[quad]], 1)])
    return X, F
