"""Coarse stage: fit a linear face model to 2D landmarks (S1 Eq. 1-2, S4 §3.4).

Unknowns per image: rotation R, translation t (mm), focal length f (px, optional), expression β;
shared across the images of one person: identity α (N(0, 1) prior). Camera: perspective, square
pixels, principal point at the image centre. Landmarks: MediaPipe's 478 points tied to the model
by the derived embedding (fitter.model.embedding); face-contour correspondences follow the view's yaw.

Objective (pixels, σ = noise scale per image, growing with the view's yaw):
    Σ_i w_i ρ(‖π(R X_i(α, β) + t) - u_i‖ / σ) + ‖α‖² + λ_β ‖β‖² + (log f - log f0)² / σ_f²,
    β ∈ [0, 1] for blendshapes
w_i = region weight × embedding consistency weight × how squarely the landmark's surface faces the
camera; ρ is Cauchy, handled by iteratively reweighted least squares. After a PnP start (OpenCV
SQPnP on the mean shape), every unknown is solved jointly by Levenberg-Marquardt: the normal
equations are reduced by a Schur complement onto the expression block, whose bounds are met by an
active-set solve. Several images of one person share α in the same system.
"""
import time
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.sparse as sp

from ..detection import landmarks as lmk
from ..errors import InputError
from ..geometry.camera import MODEL_TO_OPENCV, Camera, perspective, yaw_of_rotation
from ..geometry.mesh import face_normals
from ..geometry.least_squares import cauchy_weights, exp_so3, levenberg_marquardt, pose_jacobian
from ..model.embedding import LandmarkEmbedding
from ..model.morphable import MorphableModel

REGION_WEIGHTS = {"contour": 0.5, "brows": 1.0, "irises": 0.0, "eyes": 2.0, "lips": 2.0, "nose": 2.0, "other": 0.5}
NOISE_FRACTION_OF_IOD = 0.05    # landmark noise σ as a fraction of the interocular distance (px)
YAW_NOISE_DEG = 60.0            # σ grows by (1 + (|yaw| / this)²): x2 at 60° (tuned on synthetic renders)
FOCAL_PRIOR_SIGMA = 0.5         # std of log f around f0


@dataclass
class ImageFit:
    """Per-image result: camera (K, R, t, size), expression, landmark reprojection error."""

    camera: Camera
    expression: np.ndarray
    landmarks_2d: np.ndarray           # (478, 2) detected
    fitted_2d: np.ndarray              # (478, 2) projected fitted landmarks
    error_px: float                    # median over used landmarks
    error_iod: float                   # median / interocular distance
    weights: np.ndarray                # (478,) final robust x region weights


@dataclass
class CoarseFit:
    identity: np.ndarray
    images: list
    iterations: int
    seconds: float
    info: dict = field(default_factory=dict)


class LandmarkBasis:
    """The model restricted to the landmarks: mean, identity and expression bases at the 478 points,
    with the contour rows kept per yaw bin (built once per model and embedding: `PreparedModel.landmark_basis`)."""

    def __init__(self, model: MorphableModel, emb: LandmarkEmbedding):
        self.model, self.emb = model, emb
        F, N = model.faces, model.n_vertices
        W0 = emb.vertex_weights(F, N, 0.0).tolil()
        c = emb.contour_ids
        self.contour = c
        W0[c, :] = 0
        W0 = W0.tocsr()
        B = np.concatenate([model.identity_basis, model.expression_basis], axis=0)  # (P, N, 3)
        P = len(B)
        Bflat = B.transpose(1, 0, 2).reshape(N, P * 3)
        self.mean = W0 @ model.mean
        self.basis = np.ascontiguousarray((W0 @ Bflat).reshape(478, P, 3).transpose(0, 2, 1))  # (478, 3, P)
        Y = len(emb.contour_yaws)
        self.c_mean = np.zeros((Y, len(c), 3))
        self.c_basis = np.zeros((Y, len(c), 3, P))
        for b in range(Y):
            rows = np.repeat(np.arange(len(c)), 3)
            Wb = sp.csr_matrix((emb.contour_barycentric[b].ravel(), (rows, F[emb.contour_triangles[b]].ravel())),
                               shape=(len(c), N))
            self.c_mean[b] = Wb @ model.mean
            self.c_basis[b] = (Wb @ Bflat).reshape(len(c), P, 3).transpose(0, 2, 1)
        self.n_identity = model.n_identity
        self.n_expression = model.n_expression
        self.normals = face_normals(model.mean, F)[emb.triangles]  # (478, 3) model frame, mean shape

    def facing_cosines(self, R, Xc):
        """(478,) cosine between each landmark's surface normal (mean shape, rotated by R) and the view
        ray to it (Xc (478, 3) camera frame); contour points, silhouette points by definition, get 1."""
        n = self.normals @ R.T
        cos = -(n * Xc).sum(1) / np.linalg.norm(Xc, axis=1)
        cos[self.contour] = 1.0
        return cos

    def facing_weights(self, R, Xc, lo=0.1, hi=0.5):
        """(478,) in [0, 1]: how squarely each non-contour landmark's surface faces the camera (cosine
        between its normal and the view ray, ramped from `lo` to `hi`). Points on surfaces seen at
        grazing angles or from behind are where the detector guesses (the far eye corner at 60° yaw):
        they get little weight. Contour points are silhouette points by definition and keep 1."""
        return np.clip((self.facing_cosines(R, Xc) - lo) / (hi - lo), 0.0, 1.0)

    def at_yaw(self, yaw, out=None):
        """(mean (478, 3), basis (478, 3, P)) with the contour rows for this yaw (degrees). With
        out=(mean, basis) from an earlier call, only the contour rows are rewritten, in place."""
        (i0, i1), w = self.emb._yaw_bins(yaw)
        mean, basis = (self.mean.copy(), self.basis.copy()) if out is None else out
        mean[self.contour] = (1 - w) * self.c_mean[i0] + w * self.c_mean[i1]
        basis[self.contour] = (1 - w) * self.c_basis[i0] + w * self.c_basis[i1]
        return mean, basis


def region_weights():
    w = np.zeros(478)
    for name, idx in lmk.groups().items():
        w[idx] = REGION_WEIGHTS.get(name, 1.0)
    return w


FOCAL_RANGE_OF_SIDE = (0.1, 20.0)  # a given focal length, in units of the image's larger side (fov 5.7°-157°)


def check_focal_for_image(focal, image_size):
    """A given focal length (px; None: not given) must suit the image (W, H): between FOCAL_RANGE_OF_SIDE
    times its larger side. Raises InputError (beyond it the pose solver has nothing to work with)."""
    if focal is None:
        return
    side = float(max(image_size))
    lo, hi = (k * side for k in FOCAL_RANGE_OF_SIDE)
    if not lo <= focal <= hi:
        fov = np.degrees(2 * np.arctan(side / (2 * focal)))
        raise InputError(f"a focal length of {focal:g} px is implausible for a {image_size[0]}x{image_size[1]} "
                         f"image (a {fov:.2g}° field of view): give {lo:.0f}-{hi:.0f} px "
                         f"({FOCAL_RANGE_OF_SIDE[0]:g}-{FOCAL_RANGE_OF_SIDE[1]:g} x its larger side)")


def initial_pose(X, u, camera: Camera, w):
    """R, t from the model's mean landmarks X (478, 3) and their pixels u (478, 2) in `camera` (its
    intrinsics) by OpenCV's PnP (SQPnP), weights w > 0 only."""
    import cv2

    sel = w > 0
    ok, rvec, tvec = cv2.solvePnP(X[sel].astype(np.float64), u[sel].astype(np.float64), camera.K, None,
                                  flags=cv2.SOLVEPNP_SQPNP)
    if not ok:  # frontal guess at a plausible distance
        R = MODEL_TO_OPENCV.copy()
        t = np.array([0, 0, camera.focal * 150.0 / max(np.ptp(u[sel, 0]), 1.0)])
        return R, t
    R, t = cv2.Rodrigues(rvec)[0], tvec.ravel()
    if t[2] < 0:  # PnP's mirrored solution
        R, t = MODEL_TO_OPENCV.copy(), np.array([0, 0, abs(t[2])])
    return R, t


def _bounded_ridge(H, g, lower, upper, fixed=None, iters=30):
    """argmin ½ cᵀHc - gᵀc with lower <= c <= upper (±inf allowed), H SPD: an active-set loop,
    warm-started from the active set `fixed` of a previous, similar problem. Returns (c, active set)."""
    n = len(g)
    fixed = np.zeros(n, bool) if fixed is None else fixed.copy()
    c = np.where(fixed, np.clip(0.0, lower, upper), 0.0)
    for _ in range(iters):
        free = ~fixed
        Hf = H[free]
        c[free] = scipy.linalg.solve(Hf[:, free], g[free] - Hf[:, fixed] @ c[fixed], assume_a="pos",
                                     check_finite=False)
        low, high = c < lower, c > upper
        if not (low | high).any():
            grad = H @ c - g  # KKT for variables on a bound: release those that want to move inside
            release = fixed & (((c <= lower) & (grad < 0)) | ((c >= upper) & (grad > 0)))
            if not release.any():
                break
            fixed &= ~release
            continue
        c = np.clip(c, lower, upper)
        fixed |= low | high
    return np.clip(c, lower, upper), fixed


def fit_landmarks(prepared, points_list, cameras, free_focal=False, iterations=8, identity=None,
                  landmark_weights=None, expression_reg=10.0, tol=0.03, noise_fraction=NOISE_FRACTION_OF_IOD,
                  shared_expression=False):
    """Fit one identity and per-image pose/expression to detected landmarks.

    prepared: the PreparedModel (its landmark basis and embedding);
    points_list: list of (478, 2) pixel arrays (one per image of the same person); cameras: one Camera per
    image, its intrinsics and size (the pose is solved; `Camera.for_image` makes a photo's); free_focal:
    whether the focal length is solved (its prior centred on the camera's focal), one bool for all the
    images or a list; a fixed focal must suit the image (check_focal_for_image); identity: fixed α (not solved);
    noise_fraction: landmark noise σ as a fraction of the interocular distance (it sets the balance
    between the landmarks and the priors: detected landmarks ~0.05, exact synthetic ones ~0.01);
    expression_reg: weight of ‖β‖²; shared_expression: one β for all the images (photos of one moment, e.g.
    a calibrated rig or one session's turn of the head) instead of one per image.
    After a PnP start, all unknowns are solved jointly by Levenberg-Marquardt (the normal equations
    reduced by a Schur complement onto the bounded expression block), with Cauchy IRLS weights; stops
    when the cost falls by less than `tol` (relative) or after `iterations`. Returns a CoarseFit.
    """
    with _single_threaded_blas():
        t0 = time.perf_counter()
        if len(points_list) == 0:
            raise InputError("fit_landmarks needs at least one image")
        emb = prepared.require_embedding()
        lb = prepared.landmark_basis
        base_w = (region_weights() * emb.weights) if landmark_weights is None else np.asarray(landmark_weights, float)
        problem = _Problem.create(prepared.model, lb, base_w, len(points_list), identity, expression_reg,
                                  shared_expression)
        if len(cameras) != len(points_list):
            raise InputError(f"fit_landmarks needs one camera per image: {len(cameras)} cameras, "
                             f"{len(points_list)} images")
        free = free_focal if isinstance(free_focal, (list, tuple)) else [free_focal] * len(points_list)
        for cam, is_free in zip(cameras, free):
            if cam.width <= 0 or cam.height <= 0:
                raise InputError("fit_landmarks needs each camera's image size (Camera(K, width=W, height=H), "
                                 "or Camera.for_image(W, H, focal))")
            if not is_free:
                check_focal_for_image(cam.focal, (cam.width, cam.height))
        images = [_start_image(lb, u, cam, is_free, base_w, noise_fraction) for u, cam, is_free in
                  zip(points_list, cameras, free)]
        alpha, images, it = _levenberg_marquardt(problem, problem.alpha_start.copy(), images, iterations, tol)
        results = [_image_result(lb, alpha, s, base_w) for s in images]
        return CoarseFit(alpha, results, it + 1, time.perf_counter() - t0)


def _single_threaded_blas():
    """The fit's matrices are small: BLAS threads cost more than they give (measured 2.4x slower).
    A context manager: the limit holds inside the `with` block only."""
    return warm_blas_controller().limit(limits=1, user_api="blas")


def warm_blas_controller():
    """The process's ThreadpoolController (created once: it scans the loaded libraries, ~0.1 s).
    Creating it changes no limit; `_single_threaded_blas()` must be used in a `with` block."""
    global _blas_controller
    from threadpoolctl import ThreadpoolController

    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller


_blas_controller = None


@dataclass
class _ImageState:
    """One image's unknowns and data during the fit."""

    u: np.ndarray        # (478, 2) detected pixels
    camera: Camera       # the image's camera as given (intrinsics, size)
    c: np.ndarray        # (2,) principal point
    aspect: np.ndarray   # (2,) (1, fy / fx): the focal length f = exp(logf) is fx
    R: np.ndarray        # (3, 3)
    t: np.ndarray        # (3,) mm
    logf: float          # log focal (px)
    logf0: float         # its prior mean
    f_prec: float        # its prior precision (1e10: given)
    sigma: float         # landmark noise, px
    iod: float           # detected outer interocular distance, px
    lm: tuple            # (mean (478, 3), basis (478, 3, P)) with the contour rows of the current yaw
    w: np.ndarray        # (478,) current robust x region x facing weights
    beta: np.ndarray     # (E,) expression


def _start_image(lb, u, camera: Camera, free_focal, base_w, noise_fraction):
    """An image's state at the PnP start on the mean shape; σ grows with the view's yaw."""
    u = np.asarray(u, float)
    if u.shape != (478, 2):
        raise InputError(f"expected (478, 2) landmarks, got {u.shape}")
    f0 = float(camera.focal)
    iod = lmk.outer_interocular(u)
    lm = lb.at_yaw(0.0)
    R, t = initial_pose(lm[0], u, camera, base_w)
    # landmark noise grows with the view's yaw (the detector guesses more of a turned face)
    yaw0 = abs(yaw_of_rotation(R))
    sigma = max(noise_fraction * iod, 0.5) * (1.0 + (yaw0 / YAW_NOISE_DEG) ** 2)
    return _ImageState(u=u, camera=camera, c=camera.principal_point, aspect=np.array([1.0, camera.aspect]), R=R,
                       t=t, logf=np.log(f0), logf0=np.log(f0),
                       f_prec=1.0 / FOCAL_PRIOR_SIGMA ** 2 if free_focal else 1e10, sigma=sigma, iod=iod, lm=lm,
                       w=base_w.copy(), beta=np.zeros(lb.n_expression))


@dataclass
class _Problem:
    """What stays fixed during one fit: sizes, priors and the expression bounds. The unknown vector is
    (α, then (ω, t, log f) per image: the free block of size nf, then β per image, or one β for all the
    images when `shared_expression`)."""

    lb: LandmarkBasis
    base_w: np.ndarray   # (478,) region x embedding weights
    K: int
    E: int
    n: int
    alpha_start: np.ndarray
    alpha_prior_mean: np.ndarray
    alpha_prec: float
    expression_reg: float
    lower: np.ndarray
    upper: np.ndarray
    shared_expression: bool = False

    @staticmethod
    def create(model, lb, base_w, n, identity, expression_reg, shared_expression=False):
        K, E = lb.n_identity, lb.n_expression
        blend = model.expression_kind == "blendshape"
        alpha = np.zeros(K) if identity is None else np.asarray(identity, float).copy()
        nb = 1 if shared_expression else n
        return _Problem(lb, base_w, K, E, n, alpha, np.zeros(K) if identity is None else alpha.copy(),
                        1.0 if identity is None else 1e10, expression_reg,
                        np.full(nb * E, 0.0 if blend else -np.inf), np.full(nb * E, 1.0 if blend else np.inf),
                        shared_expression)

    @property
    def nf(self):
        return self.K + 7 * self.n

    def expression_block(self, j):
        """Which β block image j uses (0 for every image when the expression is shared)."""
        return 0 if self.shared_expression else j

    def expressions(self, states):
        """The expression unknowns, concatenated (one block when shared)."""
        return states[0].beta.copy() if self.shared_expression else np.concatenate([s.beta for s in states])

    def total_cost(self, alpha, states, data):
        """The objective: weighted landmark residuals + focal, expression and identity priors."""
        c = self.alpha_prec * np.sum((alpha - self.alpha_prior_mean) ** 2)
        for j, (s, (_, _, _, r)) in enumerate(zip(states, data)):
            c += (s.w[:, None] * r * r).sum() / s.sigma ** 2
            focal_prior = s.f_prec * (s.logf - s.logf0) ** 2
            if j == 0 or not self.shared_expression:  # the expression prior once per β block
                c += focal_prior + self.expression_reg * s.beta @ s.beta
            else:
                c += focal_prior
        return c

    def residuals(self, alpha, states):
        """Objective value and per-image (X, RX, Xc, r) for the Jacobian."""
        data = []
        for s in states:
            mean, basis = s.lm
            X = mean + basis @ np.concatenate([alpha, s.beta])
            RX = X @ s.R.T
            Xc = RX + s.t
            data.append((X, RX, Xc, perspective(Xc, np.exp(s.logf) * s.aspect, s.c) - s.u))
        return self.total_cost(alpha, states, data), data

    def normal_equations(self, alpha, states, data):
        """(JᵀJ + priors, Jᵀr + prior gradients) over all unknowns at the current state."""
        K, E, n, nf = self.K, self.E, self.n, self.nf
        D = nf + (1 if self.shared_expression else n) * E
        Hm = np.zeros((D, D))
        g = np.zeros(D)
        for j, (s, (X, RX, Xc, r)) in enumerate(zip(states, data)):
            (fx, fy), R = np.exp(s.logf) * s.aspect, s.R
            Jp, ax, ay, bu, bv = pose_jacobian(RX, Xc, fx, fy)
            sw = np.sqrt(s.w) / s.sigma
            coef = np.empty((len(X), 2, 3))
            coef[:, 0] = ax[:, None] * R[0] + bu[:, None] * R[2]
            coef[:, 1] = ay[:, None] * R[1] + bv[:, None] * R[2]
            Js = np.matmul(coef * sw[:, None, None], s.lm[1]).reshape(-1, K + E)  # d/d(α, β)
            J = np.concatenate([Js[:, :K], (Jp * sw[:, None, None]).reshape(-1, 7), Js[:, K:]], axis=1)
            rw = (r * sw[:, None]).ravel()
            b = self.expression_block(j)
            idx = np.r_[0:K, K + 7 * j:K + 7 * j + 7, nf + b * E:nf + (b + 1) * E]
            # JᵀJ in single precision (half the time of dsyrk; the priors keep it well conditioned)
            JtJ = scipy.linalg.blas.ssyrk(1.0, J.astype(np.float32), trans=1).astype(np.float64)
            JtJ += np.triu(JtJ, 1).T
            if n == 1:
                Hm += JtJ
                g += J.T @ rw
            else:
                Hm[np.ix_(idx, idx)] += JtJ
                g[idx] += J.T @ rw
            p = K + 7 * j + 6
            Hm[p, p] += s.f_prec
            g[p] += s.f_prec * (s.logf - s.logf0)
            if b == j:  # the expression prior once per β block
                q = slice(nf + b * E, nf + (b + 1) * E)
                Hm[q, q] += self.expression_reg * np.eye(E)
                g[q] += self.expression_reg * s.beta
        Hm[:K, :K] += self.alpha_prec * np.eye(K)
        g[:K] += self.alpha_prec * (alpha - self.alpha_prior_mean)
        return Hm, g

    def damped_step(self, Hm, g, mu, beta_all, active):
        """The Levenberg-Marquardt step for damping mu: a Schur complement onto the expression block,
        a bounded solve there (active set warm-started from `active`), back-substitution.
        Returns (step of the free block, step of the expressions, active set)."""
        nf = self.nf
        Hd = Hm + mu * np.diag(np.diag(Hm))
        cho = scipy.linalg.cho_factor(Hd[:nf, :nf])
        Y = scipy.linalg.cho_solve(cho, np.column_stack([Hd[:nf, nf:], g[:nf]]))
        S = Hd[nf:, nf:] - Hd[:nf, nf:].T @ Y[:, :-1]
        h = g[nf:] - Hd[:nf, nf:].T @ Y[:, -1]
        db, active = _bounded_ridge(S, -h, self.lower - beta_all, self.upper - beta_all, active)
        dfree = -Y[:, -1] - Y[:, :-1] @ db
        return dfree, db, active

    def moved(self, states, dfree, db):
        """The image states after a step (new objects; arrays not stepped are shared)."""
        K, E = self.K, self.E
        out = []
        for j, s in enumerate(states):
            dp = dfree[K + 7 * j:K + 7 * j + 7]
            b = self.expression_block(j)
            out.append(replace(s, R=exp_so3(dp[:3]) @ s.R, t=s.t + dp[3:6], logf=s.logf + dp[6],
                               beta=np.clip(s.beta + db[b * E:(b + 1) * E], self.lower[:E], self.upper[:E])))
        return out


def _levenberg_marquardt(problem: _Problem, alpha, imgs, iterations, tol):
    """Reweight (contour rows of the current yaw, Cauchy x facing weights), then one damped step
    (fitter.geometry.least_squares, at most 6 tries a linearisation), until the cost falls by less than
    `tol` (relative). Returns (α, image states, last iteration)."""
    lb, active = problem.lb, [None]  # the expression bounds' active set, carried from step to step

    def linearise(x, _cost):
        alpha, imgs = x
        for s in imgs:  # contour correspondences (rewritten in place) and robust weights at the current estimate
            lb.at_yaw(yaw_of_rotation(s.R), s.lm)
        _, data = problem.residuals(alpha, imgs)
        for s, (X, RX, Xc, r) in zip(imgs, data):
            s.w = problem.base_w * cauchy_weights(np.linalg.norm(r, axis=1), 2.0 * s.sigma) * lb.facing_weights(s.R, Xc)
        cost = problem.total_cost(alpha, imgs, data)
        Hm, g = problem.normal_equations(alpha, imgs, data)
        return cost, (Hm, g, problem.expressions(imgs))

    def try_step(x, system, mu):
        alpha, imgs = x
        Hm, g, beta_all = system
        dfree, db, active[0] = problem.damped_step(Hm, g, mu, beta_all, active[0])
        cand = problem.moved(imgs, dfree, db)
        alpha_c = alpha + dfree[:problem.K]
        cost_c, _ = problem.residuals(alpha_c, cand)
        return (alpha_c, cand), cost_c

    (alpha, imgs), _, it = levenberg_marquardt(linearise, try_step, (alpha, imgs), iterations, tol, max_tries=6)
    return alpha, imgs, it


def _image_result(lb, alpha, s: _ImageState, base_w):
    """The ImageFit of one image's final state: camera, projected landmarks and their error."""
    cam = s.camera.refocused(float(np.exp(s.logf)), s.R, s.t)
    proj, err_px, err_iod = landmark_error(lb, alpha, s.beta, cam, s.u, base_w, s.lm)
    return ImageFit(cam, s.beta, s.u, proj, err_px, err_iod, s.w)


def landmark_error(lb, alpha, beta, camera, detected, base_w=None, out=None):
    """The model's landmarks (identity α, expression β; contour rows for the camera's yaw) projected by
    `camera`: (projected (478, 2) px, median distance to `detected` (478, 2) px over the landmarks with
    base_w > 0 (default: region × embedding weights), that median / the detected interocular distance).
    out: a landmark-basis buffer to reuse (LandmarkBasis.at_yaw)."""
    if base_w is None:
        base_w = region_weights() * lb.emb.weights
    mean, basis = lb.at_yaw(yaw_of_rotation(camera.R), out)
    proj = camera.project(mean + basis @ np.concatenate([alpha, beta]))
    return (proj, *lmk.landmark_error(proj, detected, base_w > 0))
