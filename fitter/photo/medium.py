"""Medium stage: Laplacian deformation of the coarse mesh towards the detected landmarks (S2 §3.3, Eq. 2–3).

The unknown is the displacement D (n, 3) of the n vertices of the model's face area (model frame, mm):

    E(D) = ‖L D‖² + Σ_k w_k ‖d_{v_k} − δ_k‖² + Σ_i a_i ‖d_i‖²

- L is the uniform Laplacian of the face area (`fitter.geometry.mesh.uniform_laplacian`, ω_ij = 1/N_i). Since
  L(V + D) − L(V) = L D, the first term is S2's ‖L(v′) − L(v)‖²: the coarse mesh's Laplacian
  coordinates (its local detail) are kept.
- Landmark k is tied to vertex v_k: the vertex nearest to its embedded surface point (the project's
  measured landmark→surface correspondence; for the contour landmarks, the one of the view's yaw bin).
  Its target is S2's μ = (x, y, z′): the detected pixel s_k back-projected at the depth z′ of the
  fitted landmark point, so δ_k = z′ K⁻¹[s_k, 1] − z′ K⁻¹[q_k, 1] with q_k the fitted landmark's pixel
  (rotated into the model frame). A residual larger than OUTLIER_SIGMAS σ is shrunk to that length
  (σ: the coarse fit's landmark noise), so one wild detection cannot tear the mesh.
- Which landmarks constrain is fixed per yaw bin of the view (those whose surface faces a camera at
  that yaw on the mean face). A landmark of the bin that this photo does not show — hidden in the
  coarse fit's rendered depth map, or seen at a grazing angle — keeps its constraint with the target
  δ = 0: with no evidence it stays where the coarse fit put it.
- The target takes only the share of the residual that is shape (TARGET_GAIN per region: the
  least-squares gain of the true residual on the detected one, measured on synthetic faces outside the
  model's span): MediaPipe's residuals after the coarse fit are mostly detector error (correlation with
  the true residual −0.27…0.42 by region), so following them fully makes the shape worse (measured).
  Landmarks of regions with no usable evidence (eyes, nose, the inner points) hold the mesh where the
  coarse fit put it, like hidden ones.
- `deform_redetected` uses instead detected − the detector run on a render of the coarse mesh
  (`fitter.model.detector_bias`), in which the detector's bias cancels on synthetic faces (correlation
  0.19…0.60), with TARGET_GAIN_ON_FIT. It is not the pipeline's default: on the textured real scan it
  made the error worse (BENCHMARKS.md).
- w_k = 0.6 for every landmark (S2's weight for its reliable regions; the per-region trust is in the
  gain, not in the weight, so that a held landmark holds as firmly as a moved one pulls).
- a_i: an anchor that holds what no landmark sees: 0 within ANCHOR_NEAR_MM of a landmark vertex,
  rising to ANCHOR_WEIGHT at ANCHOR_FAR_MM and beyond (forehead top, ears, the face area's rim).

Normal equations: (LᵀL + diag(a + Σ_k w_k e_{v_k})) D = Σ_k w_k e_{v_k} δ_kᵀ; one matrix for x, y, z.

What is factored and what is reused: the constraints add only to the diagonal, so the sparsity pattern
of the matrix is that of LᵀL for every photo. Per model (`LaplacianDeformer`, kept by the PreparedModel),
the face-area Laplacian, LᵀL, the anchors, the landmark→vertex tables and CHOLMOD's symbolic analysis
(ordering, elimination tree) are computed once. The matrix values depend only on the constraint
pattern, which is fixed per yaw bin (9 bins for ICT), so the numeric factor of each bin is computed
the first time a photo falls in it (reusing the analysis) and cached (`fitter.geometry.cholesky.FactorCache`);
every later photo costs one back-substitution for the three coordinates. The photo only changes the
right-hand side.

Vertices outside the face area follow (`fitter.model.face_area.FaceArea.extend`): those connected to it (head,
neck, mouth and eye sockets) take the displacement of the nearest face-area vertex; separate parts
(eyeballs, teeth, gums, lashes) keep the coarse fit's placement (moving the teeth with the lips, the first design, pushed them through the
lips of a smiling face).
"""
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..detection import landmarks as lmk
from ..errors import NoFaceError
from ..geometry.camera import MODEL_TO_OPENCV, Camera, rotation_matrix, yaw_of_rotation
from ..geometry.cholesky import FactorCache
from ..geometry.mesh import uniform_laplacian
from ..geometry.render import depth_visible
from ..model.detector_bias import detect_on_fit
from .coarse import NOISE_FRACTION_OF_IOD

MEDIUM_WEIGHTS = {"eyes": 0.6, "nose": 0.6, "brows": 0.6, "lips": 0.6, "other": 0.6, "contour": 0.6, "irises": 0.0}
# How much of the coarse fit's residual at a landmark is shape rather than detector error, per region:
# the least-squares gain of the true residual on the detected residual, measured on synthetic faces
# outside the model's span (`facefit bench medium` prints it; BENCHMARKS.md). Only the face contour is
# used: the eyes (correlation 0.16), nose (-0.18) and inner points (0.08) carry no usable evidence, and
# brows and lips (0.35, 0.33; gain 0.5) changed no error measurably but put a crease above the brows
# and bent the lips of a smiling face (viewed): they are held where the coarse fit put them.
TARGET_GAIN = {"contour": 0.45}
# For the detector-consistent residual P − Q (Q: the detector run on a render of the coarse fit,
# fitter.model.detector_bias), which carries evidence in every region (correlation with the true residual:
# contour 0.47, brows 0.60, eyes 0.52, lips 0.45, nose 0.19, other 0.33; least-squares gains 0.54, 1.0,
# 0.96, 0.66, 0.35, 0.55 on `facefit bench medium`'s renders): 0.3 × those gains. The scale was chosen on
# a second set of 30 out-of-span renders (seed 31337): 0.25 / 0.35 / 0.5 / 0.75 × changed the face-area
# error at yaw 0..±30 by −0.01 / −0.01 / ±0.03 / +0.01…+0.07 mm (larger shares follow the detector's
# noise into local dents).
TARGET_GAIN_ON_FIT = {"contour": 0.16, "brows": 0.30, "eyes": 0.29, "lips": 0.20, "nose": 0.10, "other": 0.16}
REDETECT_MAX_YAW = 45.0   # deform_redetected: beyond it neither residual helped (±60°: both made it worse)
ANCHOR_NEAR_MM = 10.0
ANCHOR_FAR_MM = 25.0
ANCHOR_WEIGHT = 1.0
MIN_FACING_COS = 0.2      # a landmark whose surface is seen more obliquely than ~78° gives no evidence
OUTLIER_SIGMAS = 3.0      # residuals beyond 3 σ are shrunk to 3 σ


def landmark_weights():
    """(478,) medium-stage weight per MediaPipe landmark, by region."""
    w = np.zeros(lmk.N_LANDMARKS)
    for name, idx in lmk.groups().items():
        w[idx] = MEDIUM_WEIGHTS.get(name, 0.0)
    return w


def target_gains(table=None):
    """(478,) share of the residual each landmark's target takes, by region (`table`, default
    TARGET_GAIN; 0 for a region it does not name)."""
    table = TARGET_GAIN if table is None else table
    g = np.zeros(lmk.N_LANDMARKS)
    for name, idx in lmk.groups().items():
        g[idx] = table.get(name, 0.0)
    return g


@dataclass
class MediumResult:
    vertices: np.ndarray        # (N, 3) deformed mesh, model frame, mm
    active: np.ndarray          # (478,) bool: landmarks that pulled the mesh (others: none or held)
    fitted_2d: np.ndarray       # (478, 2) landmark pixels of the deformed mesh
    error_before_px: float      # median landmark error over the active landmarks, coarse mesh
    error_after_px: float       # ... deformed mesh
    max_displacement_mm: float
    seconds: float
    solve_seconds: float        # factor lookup or numeric factorisation + back-substitution
    factor_cached: bool
    residual: str = "fitted"    # detected − ...: "on_fit" the detector on a render of the fit, "fitted" the fit;
                                # "none": no usable evidence, the coarse shape held
    redetect_seconds: float = 0.0   # rendering the fit and detecting on it (included in seconds)

    def to_dict(self):
        return {"residual": self.residual, "redetect_seconds": round(self.redetect_seconds, 5),
                "active_landmarks": int(self.active.sum()), "error_before_px": round(self.error_before_px, 4),
                "error_after_px": round(self.error_after_px, 4),
                "max_displacement_mm": round(self.max_displacement_mm, 4), "seconds": round(self.seconds, 5),
                "solve_seconds": round(self.solve_seconds, 5), "factor_cached": bool(self.factor_cached)}


class LaplacianSystem:
    """E(D) = ‖L D‖² + Σ_k w_k ‖d_{v_k} − δ_k‖² + Σ_i a_i ‖d_i‖² on one mesh (F, n), solved by a cached
    CHOLMOD factor of LᵀL + diag(a + Σ_k w_k e_{v_k}) per constraint pattern (vertices + weights)."""

    def __init__(self, F, n_vertices, anchor=None):
        self.n = int(n_vertices)
        L = uniform_laplacian(F, self.n)
        self.LtL = (L.T @ L).tocsc()
        self.anchor = np.full(self.n, 1e-8) if anchor is None else np.asarray(anchor, float)
        self.cache = FactorCache(self.LtL + sp.diags(np.ones(self.n)))

    def matrix(self, vertices, weights):
        diag = self.anchor + np.bincount(vertices, weights=weights, minlength=self.n)
        return self.LtL + sp.diags(diag)

    def solve(self, vertices, weights, targets, key=None):
        """Displacement (n, 3) for constraints d[vertices] ≈ targets (M, 3) with weights (M,). `key`
        names the pattern for the factor cache (default: the vertices and weights themselves).
        Returns (D, factor_was_cached)."""
        vertices = np.asarray(vertices, np.int64)
        weights = np.asarray(weights, float)
        if key is None:
            key = (vertices.tobytes(), weights.tobytes())
        rhs = np.zeros((self.n, 3))
        np.add.at(rhs, vertices, weights[:, None] * np.asarray(targets, float))
        return self.cache.solve(key, lambda: self.matrix(vertices, weights), rhs)


class LaplacianDeformer:
    """Everything of the medium stage that depends only on the model and its landmark embedding: per
    yaw bin the constraining landmarks and their vertices, the anchors, and the Laplacian system with its
    CHOLMOD analysis and factors, on the face area (`fitter.model.face_area.FaceArea`, whose `domain`,
    `F_local` and `extend` it exposes); `PreparedModel.laplacian_deformer`."""

    def __init__(self, prepared):
        model, emb = prepared.model, prepared.require_embedding()
        area = prepared.face_area
        self.model, self.emb, self.area = model, emb, area
        self.F_local, self.domain, self.extend = area.F_local, area.domain, area.extend
        self.vertex_of_landmark, self.contour_ids = area.vertex_of_landmark, area.contour_ids
        self.yaw_bins = np.asarray(emb.contour_yaws, float) if len(self.contour_ids) else np.zeros(1)
        self.weights = landmark_weights()
        # per yaw bin: the landmark vertices and which landmarks constrain (facing that view, mean face)
        lb = prepared.landmark_basis
        self.bin_vertices, self.bin_active = [], []
        for b, yaw in enumerate(self.yaw_bins):
            v = area.landmark_vertices(b)
            R = MODEL_TO_OPENCV @ rotation_matrix(yaw)
            P = emb.points(model.mean, model.faces, yaw) @ R.T + np.array([0.0, 0.0, 600.0])
            facing = lb.facing_cosines(R, P) > MIN_FACING_COS
            self.bin_vertices.append(v)
            self.bin_active.append((self.weights > 0) & (v >= 0) & facing)
        # anchors: distance (mean shape) from each face-area vertex to the nearest landmark vertex
        cand = np.unique(np.concatenate([v[a] for v, a in zip(self.bin_vertices, self.bin_active)]))
        P = model.mean[self.domain]
        dist = cKDTree(P[cand]).query(P)[0]
        ramp = np.clip((dist - ANCHOR_NEAR_MM) / (ANCHOR_FAR_MM - ANCHOR_NEAR_MM), 0.0, 1.0)
        self.system = LaplacianSystem(self.F_local, len(self.domain), ANCHOR_WEIGHT * ramp ** 2 + 1e-8)
        self.system.cache.max_factors = len(self.yaw_bins)

    def yaw_bin(self, yaw_deg):
        return int(np.argmin(np.abs(self.yaw_bins - yaw_deg)))

    def system_matrix(self, b):
        """LᵀL + diag(anchor + landmark weights) of yaw bin b."""
        a = self.bin_active[b]
        return self.system.matrix(self.bin_vertices[b][a], self.weights[a])

    def solve(self, b, targets):
        """Face-area displacement (n, 3) for yaw bin b with target displacements (478, 3) (rows of
        landmarks not active in the bin are ignored). Returns (D, factor_was_cached)."""
        a = self.bin_active[b]
        return self.system.solve(self.bin_vertices[b][a], self.weights[a], targets[a], key=("yaw_bin", b))


def deform_to_landmarks(prepared, V, camera: Camera, detected, depth, sigma_px=None, on_fit=None):
    """Medium stage for one photo.

    prepared: the PreparedModel (its LaplacianDeformer and landmark basis); V: (N, 3) coarse mesh (model frame, mm); camera: its fitted camera; detected: (478, 2) landmark
    pixels; depth: (H, W) the coarse mesh rendered with `camera` (mm, 0 = background), which decides
    the visibility of each landmark; sigma_px: the landmark noise for the outlier shrink (default:
    5 % of the detected interocular distance, as the coarse fit); on_fit: (478, 2) the detector's
    landmarks on a render of V (`fitter.model.detector_bias.detect_on_fit`): the residual is then
    detected − on_fit (the detector's own bias cancels) with the TARGET_GAIN_ON_FIT gains, instead of
    detected − the fitted landmarks with TARGET_GAIN.
    """
    t0 = time.perf_counter()
    model, emb = prepared.model, prepared.require_embedding()
    deformer = prepared.laplacian_deformer
    detected = np.asarray(detected, float)
    if detected.shape != (lmk.N_LANDMARKS, 2):
        raise ValueError(f"expected ({lmk.N_LANDMARKS}, 2) landmarks, got {detected.shape}")
    F = model.faces
    yaw = yaw_of_rotation(camera.R)
    b = deformer.yaw_bin(yaw)
    P = emb.points(V, F, yaw)
    Pc = camera.to_camera(P)
    q = camera.project(P)
    # evidence in this photo: visible in the coarse render's depth map and facing the camera
    vis = depth_visible(q, Pc[:, 2], depth, np.maximum(1.0, 0.005 * Pc[:, 2]), window=1)
    facing = prepared.landmark_basis.facing_cosines(camera.R, Pc) > MIN_FACING_COS
    active = deformer.bin_active[b] & vis & facing
    if sigma_px is None:
        sigma_px = max(NOISE_FRACTION_OF_IOD * lmk.outer_interocular(detected), 0.5)
    r = detected - (q if on_fit is None else np.asarray(on_fit, float))
    rn = np.linalg.norm(r, axis=1)
    r *= np.minimum(1.0, OUTLIER_SIGMAS * sigma_px / np.maximum(rn, 1e-12))[:, None]
    # targets: the (shrunk) detected pixel back-projected at the fitted point's depth z′, minus the point
    rays = camera.ray_offsets(r)  # K⁻¹[s,1] − K⁻¹[q,1]
    targets = (Pc[:, 2:3] * rays) @ camera.R  # camera -> model frame (rows: Rᵀ δ)
    targets *= target_gains(None if on_fit is None else TARGET_GAIN_ON_FIT)[:, None]
    targets[~active] = 0.0
    t1 = time.perf_counter()
    D_local, cached = deformer.solve(b, targets)
    solve_s = time.perf_counter() - t1
    V_new = np.asarray(V, float) + deformer.extend(D_local)
    q_new = camera.project(emb.points(V_new, F, yaw))
    idx = np.flatnonzero(active)

    def err(qq):
        return lmk.landmark_error(qq, detected, idx)[0] if len(idx) else 0.0

    return MediumResult(V_new, active, q_new, err(q), err(q_new), float(np.linalg.norm(D_local, axis=1).max(initial=0.0)),
                        time.perf_counter() - t0, solve_s, cached, "fitted" if on_fit is None else "on_fit")


def deform_redetected(prepared, V, camera: Camera, detected, depth, on_fit=None):
    """The medium stage with the detector-consistent residual: the detector is also run on a render of
    the coarse mesh V (`fitter.model.detector_bias`) and the residual is detected − that detection. Where it
    gives no evidence (a view beyond REDETECT_MAX_YAW, or no face found on the render) the coarse shape
    is held (residual "none"). on_fit: the detections on the render when the caller already has them.
    Not the pipeline's default: it helps on synthetic faces but not on the textured real scan
    (BENCHMARKS.md, medium stage)."""
    t0 = time.perf_counter()
    model, emb = prepared.model, prepared.require_embedding()
    yaw = yaw_of_rotation(camera.R)
    reference, kind = np.asarray(detected, float), "none"  # a zero residual: nothing moves
    if abs(yaw) <= REDETECT_MAX_YAW:
        try:
            reference = on_fit if on_fit is not None else detect_on_fit(
                prepared, V, camera, camera.project(emb.points(V, model.faces, yaw)))
            kind = "on_fit"
        except NoFaceError:
            pass
    t_redetect = time.perf_counter() - t0
    res = deform_to_landmarks(prepared, V, camera, detected, depth, on_fit=reference)
    res.residual = kind
    res.redetect_seconds = t_redetect
    res.seconds += t_redetect
    return res
