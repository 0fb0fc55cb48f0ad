"""Model-based bundle adjustment of several views of one face (issue 16, part 1): the identity, every
view's pose and (for a video) one shared focal length refined so that the same skin point, seen in
several views, projects where those views see it.

Photo-consistency, made sparse and robust: tracks of skin points seen in several views, of three kinds —
SIFT keypoints matched between views (`fitter.video.sift`), skin points followed through a video
(`fitter.video.flow`) and model-guided matches between photos far apart (`fitter.video.wide`), each gated
by the fit (GATE_IOD interocular distances per round) and merged (`fitter.video.tracks`). Each track is a
point on the model's surface: its anchor — the barycentric point of a face-area triangle where the view
that sees it most squarely lifts it — plus a slide u_t (2, mm) in the anchor's tangent plane, since the
fit that lifted it is not exact:

    X_t(α, u_t) = Σ_j b_tj V_k(α)[F[tri_t, j]] + T_t u_t,   V_k(α) = mean + Bα + Eβ_k

(β_k the view's expression, refined too: the joint fit splits the face between identity and expression
by landmarks, and a wrong split left in place makes the tracks pull the identity the wrong way — on a
synthetic neutral face the identity's error went 2.78 → 2.84 mm with the expressions kept, 2.78 → 1.63 at
the true ones). The objective (Levenberg–Marquardt, Cauchy IRLS at CAUCHY_SIGMAS σ):

    Σ_(t,k) ||π_k(X_t) − x_tk||² / σ_f²  +  Σ_k Σ_l w_kl ||π_k(L_l(α, β_k)) − d_kl||² / σ_k²  +  ||α||²  +  λ_β Σ_k ||β_k||²

the tracks' reprojection (σ_f per observation: `Tracks.sigma`, set by the track's kind),
the joint fit's landmark term with its σ_k, weights and the N(0, 1) identity prior kept (inner landmarks
only: the contour's points slide with the pose), and for a shared focal a log-normal prior
(FOCAL_SIGMA_LOG) around the joint fit's median. Where rays of one track disagree along the surface
normal, only the shape (α) can reconcile them — the cue landmarks do not carry. The tracks' slides are
eliminated per track (2×2 Schur complement); the reduced system has K + (6 + E) V (+1) unknowns. Tracks are
rebuilt once from the refined fit (a tighter gate) and the problem solved again.

It needs skin texture, and declines without it (fewer than MIN_TRACKS tracks in the first round). Measured
(`facefit bench refine`, BENCHMARKS.md): on a random identity filmed turning with skin texture (1,000-1,800
tracks) the identity's vertex error falls 26-52 % with exact views and 11-37 % through the whole video path;
with one skin tone (13-29 tracks: shading, which slides over the surface as the head turns) forcing it makes
the error 25-40 % worse. The mini MICC videos' renders give 15-159 tracks: forced, it helps their painted
synthetic subject and Fran's textured scan indoors and harms the untextured painted scans — and Fran gives
as few tracks as those, so the gate sits above them all.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import Camera, perspective, yaw_of_rotation
from ..geometry.mesh import face_normals, tangent_frames
from ..geometry.least_squares import cauchy_weights, exp_so3, levenberg_marquardt, pose_jacobian
from ..photo.coarse import YAW_NOISE_DEG, region_weights
from .flow import flow_tracks
from .joint import joint_noise_fraction
from .sift import build_tracks, detect_features
from .tracks import Tracks, empty_tracks, merge_tracks, view_geometry
from .wide import wide_tracks

CAUCHY_SIGMAS = 2.5         # robust scale, in σ
GATE_IOD = (0.08, 0.03)     # a match lands this close (× interocular distance) to the fit's prediction, per round
ITERATIONS = (15, 6)        # Levenberg–Marquardt iterations at most, first round and after re-matching
TOLERANCE = 1e-3            # stop when an accepted step lowers the cost by less than this (relative)
EXPRESSION_REG = 10.0       # weight of ||β||² per view, as in the joint fit (fitter.photo.coarse)
FOCAL_SIGMA_LOG = 0.03     # the shared focal's prior around the joint fit's median (free, it drifts 20-30 % on
                            # weakly textured faces; measured on the mini-MICC videos)
MIN_TRACKS = 400            # fewer tracks than this: too little surface texture, the refinement is not applied
                            # (a video's SIFT and flow tracks together; the mini MICC's painted and untextured
                            # scans give 49-388; the skin-textured ones 446-1,093 at 260 px faces, 218-718 at
                            # 120 px, 60-171 at 80 px)
MIN_PHOTO_TRACKS = 60       # the same for a few photos (model-guided matches of one pair: painted and untextured
                            # pairs 30-60° apart give 5-45 in the first round, skin-textured ones up to 45° 94-316)


@dataclass
class BundleView:
    """One view given to the adjustment (the joint fit's result for it)."""

    image: np.ndarray       # (H, W, 3) uint8
    camera: Camera
    expression: np.ndarray  # (E,)
    landmarks: np.ndarray   # (478, 2) detected, px


@dataclass
class BundleResult:
    identity: np.ndarray
    cameras: list                 # refined Camera per view
    expressions: np.ndarray       # (V, E) refined expression per view
    tracks: Tracks
    info: dict = field(default_factory=dict)


def _gram(A, B):
    """Σ_m A_mᵀ B_m for A, B (M, r, P): (P, P), through one BLAS product."""
    P = A.shape[-1]
    return A.reshape(-1, P).T @ B.reshape(-1, P)


def _inverse_2x2(A):
    """Inverses of (T, 2, 2) matrices in closed form."""
    a, b, c, d = A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1]
    det = a * d - b * c
    return np.stack([np.stack([d, -b], 1), np.stack([-c, a], 1)], 1) / det[:, None, None]


# --- the adjustment ----------------------------------------------------------------------------------
def bundle_adjust(prepared, views, identity, shared_focal=True, iterations=ITERATIONS, rounds=2, min_tracks=MIN_TRACKS,
                  flow=None, wide=False):
    """Refine the identity (K,), each view's pose and, with shared_focal, one focal length for all views
    (else each view keeps its own) — see the module docstring. views: BundleView per view (the joint
    fit's cameras and expressions); flow: fitter.video.flow.FlowObservations of points followed through
    the video between the views, whose tracks join the SIFT tracks; wide: also the model-guided matches
    between views far apart (fitter.video.wide; for photos). With fewer than min_tracks tracks (both
    kinds) in the first round nothing is changed (info["applied"] False, with the reason). Returns a
    BundleResult."""
    t0 = time.perf_counter()
    alpha = np.asarray(identity, float).copy()
    betas = np.array([v.expression for v in views], float)
    cams = [v.camera for v in views]
    if shared_focal:  # one focal for all: the median, each view's depth scaled to keep its image size
        f = float(np.median([c.focal for c in cams]))
        cams = [c.with_focal(f) for c in cams]
    info = {"rounds": [], "focal": "shared" if shared_focal else "per view"}
    tracks = empty_tracks()
    t1 = time.perf_counter()
    features = [detect_features(v.image, v.landmarks) for v in views]
    info["features_s"] = round(time.perf_counter() - t1, 3)
    for rnd in range(rounds):
        cur = [BundleView(v.image, c, b, v.landmarks) for v, c, b in zip(views, cams, betas)]
        t1 = time.perf_counter()
        gate = GATE_IOD[min(rnd, len(GATE_IOD) - 1)]
        geometry = view_geometry(prepared, cur, alpha)  # each view's mesh and render, shared by the three
        sift = build_tracks(prepared, cur, alpha, gate, features, geometry)
        followed = flow_tracks(prepared, cur, alpha, flow, gate, geometry) if flow is not None else empty_tracks()
        wide_counts = {}
        matched = wide_tracks(prepared, cur, alpha, gate, wide_counts, geometry) if wide else empty_tracks()
        tracks = merge_tracks(merge_tracks(sift, followed), matched)
        t_match = time.perf_counter() - t1
        counts = {"tracks": int(tracks.n), "sift_tracks": int(sift.n), "flow_tracks": int(followed.n),
                  "wide_tracks": int(matched.n)}
        if wide:
            counts["wide_candidates"] = int(wide_counts.get("candidates", 0))
        if rnd == 0 and tracks.n < min_tracks:
            info.update(applied=False, match_s=round(t_match, 3), **counts,
                        reason=f"{tracks.n} tracks < {min_tracks}: too few skin points matched across the views "
                               f"(too little texture, or views too different) to refine by")
            info["seconds"] = time.perf_counter() - t0
            return BundleResult(np.asarray(identity, float).copy(), [v.camera for v in views], betas, tracks, info)
        problem = _Adjustment(prepared, cur, tracks, shared_focal)
        alpha, betas, cams, stats = problem.solve(alpha, betas, iterations[min(rnd, len(iterations) - 1)])
        stats.update(**counts, observations=int(len(tracks.view)), match_s=round(t_match, 3))
        info["rounds"].append(stats)
    info.update(applied=True, seconds=time.perf_counter() - t0)
    return BundleResult(alpha, cams, betas, tracks, info)


class _Adjustment:
    """One Levenberg–Marquardt problem. The unknowns: the global block — α (K), then per view (ω, t) (6),
    then per view β (E), then log f (shared focal only) — and the tracks' slides u (T, 2), eliminated per
    track. A view's rows touch α, its own pose and β, and f only: each view's normal equations are formed
    on those columns and added in."""

    def __init__(self, prepared, views, tracks: Tracks, shared_focal, expression_reg=EXPRESSION_REG):
        model, F = prepared.model, prepared.render_faces
        self.model, self.views, self.tr = model, views, tracks
        self.shared_focal, self.expression_reg = shared_focal, expression_reg
        K, E, nV = model.n_identity, model.n_expression, len(views)
        self.K, self.E, self.V = K, E, nV
        self.beta0 = K + 6 * nV
        self.P = self.beta0 + E * nV + (1 if shared_focal else 0)
        self.cols = [np.concatenate([np.arange(K), K + 6 * k + np.arange(6), self.beta0 + E * k + np.arange(E),
                                     [self.P - 1] if shared_focal else []]).astype(np.int64) for k in range(nV)]
        blend = model.expression_kind == "blendshape"
        self.lower, self.upper = (0.0, 1.0) if blend else (-np.inf, np.inf)
        T = F[tracks.tri]                                                    # (T, 3) vertex ids
        self.B = np.einsum("tj,ktjc->tck", tracks.bary, model.identity_basis[:, T].astype(float))      # (T, 3, K)
        self.Bx = np.einsum("tj,ktjc->tck", tracks.bary, model.expression_basis[:, T].astype(float))   # (T, 3, E)
        self.mean = (tracks.bary[:, :, None] * model.mean[T]).sum(1)                                 # (T, 3)
        self.tangent = np.stack(tangent_frames(face_normals(model.mean, F)[tracks.tri]), axis=2)  # (T, 3, 2)
        self.obs = [np.flatnonzero(tracks.view == k) for k in range(nV)]
        # landmarks: inner points, with the joint fit's weights and σ
        lb = prepared.landmark_basis
        inner = np.setdiff1d(np.arange(478), lb.contour)
        self.lm_mean, self.lm_basis = lb.mean[inner], lb.basis[inner]        # (L, 3), (L, 3, K + E)
        base_w = (region_weights() * prepared.require_embedding().weights)[inner]
        frac = joint_noise_fraction(nV)
        self.lm = []
        for v in views:
            yaw = abs(yaw_of_rotation(v.camera.R))
            sigma = max(frac * lmk.outer_interocular(v.landmarks), 0.5) * (1 + (yaw / YAW_NOISE_DEG) ** 2)
            self.lm.append((v.landmarks[inner], base_w, sigma))
        self.c = [v.camera.principal_point for v in views]
        self.f0 = views[0].camera.focal
        self.focal_prec = 1.0 / FOCAL_SIGMA_LOG ** 2

    def _view_terms(self, k, alpha, beta, u, cam):
        """View k's whitened residuals and Jacobians on its columns: features (r (m, 2), G (m, 2, C),
        Ju (m, 2, 2)) and landmarks (r (L, 2), G (L, 2, C), weights (L,))."""
        K, E, (fx, fy) = self.K, self.E, cam.focal_xy
        tr, sel = self.tr, self.obs[k]
        C = len(self.cols[k])

        def project(X, Bid, Bex):
            RX = X @ cam.R.T
            Xc = RX + cam.t
            r = perspective(Xc, cam.focal_xy, self.c[k])
            Jp, ax, ay, bu, bv = pose_jacobian(RX, Xc, fx, fy)
            dXc = np.zeros((len(X), 2, 3))
            dXc[:, 0, 0], dXc[:, 0, 2], dXc[:, 1, 1], dXc[:, 1, 2] = ax, bu, ay, bv
            dX = dXc @ cam.R                                                # (m, 2, 3) d(projection)/d(model point)
            G = np.zeros((len(X), 2, C))
            G[:, :, :K] = dX @ Bid
            G[:, :, K:K + 6] = Jp[:, :, :6]
            G[:, :, K + 6:K + 6 + E] = dX @ Bex
            if self.shared_focal:
                G[:, :, -1] = Jp[:, :, 6]
            return r, G, dX

        t = tr.track[sel]
        X = (self.mean[t] + np.einsum("mck,k->mc", self.B[t], alpha) + np.einsum("mce,e->mc", self.Bx[t], beta)
             + np.einsum("mcd,md->mc", self.tangent[t], u[t]))
        r, G, dX = project(X, self.B[t], self.Bx[t])
        sig = tr.sigma[sel]
        feat = ((r - tr.uv[sel]) / sig[:, None], G / sig[:, None, None], (dX @ self.tangent[t]) / sig[:, None, None])
        d, w, sigma = self.lm[k]
        Xl = self.lm_mean + self.lm_basis[:, :, :K] @ alpha + self.lm_basis[:, :, K:] @ beta
        r, G, _ = project(Xl, self.lm_basis[:, :, :K], self.lm_basis[:, :, K:])
        return feat, ((r - d) / sigma, G / sigma, w)

    def _cost(self, alpha, betas, u, cams, parts=False):
        c2 = CAUCHY_SIGMAS ** 2
        features = landmarks = 0.0
        for k, cam in enumerate(cams):
            (fr, _, _), (lr, _, w) = self._view_terms(k, alpha, betas[k], u, cam)
            features += float(np.sum(c2 * np.log1p((fr ** 2).sum(1) / c2)))
            landmarks += float(np.sum(w * c2 * np.log1p((lr ** 2).sum(1) / c2)))
        prior = float(alpha @ alpha) + self.expression_reg * float((betas ** 2).sum())
        if self.shared_focal:
            prior += self.focal_prec * float(np.log(cams[0].focal / self.f0)) ** 2
        if parts:
            return {"features": round(features, 2), "landmarks": round(landmarks, 2), "prior": round(prior, 2)}
        return features + landmarks + prior

    def _residual_norms(self, alpha, betas, u, cams):
        """(M,) px: each track observation's reprojection error."""
        err = np.zeros(len(self.tr.view))
        for k, cam in enumerate(cams):
            fr = self._view_terms(k, alpha, betas[k], u, cam)[0][0]
            err[self.obs[k]] = np.linalg.norm(fr, axis=1) * self.tr.sigma[self.obs[k]]
        return err

    def _normal_equations(self, alpha, betas, u, cams):
        T, P = self.tr.n, self.P
        H, g = np.zeros((P, P)), np.zeros(P)
        Huu, Hgu, gu = np.zeros((T, 2, 2)), np.zeros((T, P, 2)), np.zeros((T, 2))
        for k, cam in enumerate(cams):
            cols, sel = self.cols[k], self.obs[k]
            (fr, fG, fJu), (lr, lG, lw) = self._view_terms(k, alpha, betas[k], u, cam)
            wf = cauchy_weights(np.linalg.norm(fr, axis=1), CAUCHY_SIGMAS)
            wl = lw * cauchy_weights(np.linalg.norm(lr, axis=1), CAUCHY_SIGMAS)
            Gw, Lw = fG * wf[:, None, None], lG * wl[:, None, None]
            H[np.ix_(cols, cols)] += _gram(Gw, fG) + _gram(Lw, lG)
            g[cols] += Gw.reshape(-1, len(cols)).T @ fr.ravel() + Lw.reshape(-1, len(cols)).T @ lr.ravel()
            t = self.tr.track[sel]
            np.add.at(Huu, t, np.matmul((fJu * wf[:, None, None]).transpose(0, 2, 1), fJu))
            local = np.zeros((T, len(cols), 2))
            np.add.at(local, t, np.matmul(Gw.transpose(0, 2, 1), fJu))
            Hgu[:, cols] += local
            np.add.at(gu, t, np.einsum("mia,mi->ma", fJu * wf[:, None, None], fr))
        K, b0 = self.K, self.beta0
        H[:K, :K] += np.eye(K)
        g[:K] += alpha
        idx = np.arange(b0, b0 + self.E * self.V)
        H[idx, idx] += self.expression_reg
        g[b0:b0 + self.E * self.V] += self.expression_reg * betas.ravel()
        if self.shared_focal:
            H[-1, -1] += self.focal_prec
            g[-1] += self.focal_prec * np.log(cams[0].focal / self.f0)
        return H, g, Huu + 1e-6 * np.eye(2), Hgu, gu

    def _moved(self, alpha, betas, cams, dg):
        K, out = self.K, []
        scale = np.exp(dg[-1]) if self.shared_focal else 1.0
        for k, cam in enumerate(cams):
            w, dt = dg[K + 6 * k:K + 6 * k + 3], dg[K + 6 * k + 3:K + 6 * k + 6]
            out.append(cam.zoomed(scale, exp_so3(w) @ cam.R, cam.t + dt))
        b = betas + dg[self.beta0:self.beta0 + self.E * self.V].reshape(self.V, self.E)
        return alpha + dg[:K], np.clip(b, self.lower, self.upper), out

    def solve(self, alpha, betas, iterations):
        T = self.tr.n
        u = np.zeros((T, 2))
        cams = [v.camera for v in self.views]
        cost0 = self._cost(alpha, betas, u, cams)
        err0 = self._residual_norms(alpha, betas, u, cams)

        def linearise(x, cost):
            alpha, betas, u, cams = x
            H, g, Huu, Hgu, gu = self._normal_equations(alpha, betas, u, cams)
            # expression weights held at a bound they are pushed against are fixed for this step
            bi = np.arange(self.beta0, self.beta0 + self.E * self.V)
            b = betas.ravel()
            held = bi[((b <= self.lower + 1e-9) & (g[bi] > 0)) | ((b >= self.upper - 1e-9) & (g[bi] < 0))]
            H[held], H[:, held], g[held], Hgu[:, held] = 0.0, 0.0, 0.0, 0.0
            H[held, held] = 1.0
            # the slides' blocks are not damped: the reduced system is formed once per linearisation
            Hinv = _inverse_2x2(Huu)                                                  # (T, 2, 2)
            HgH = np.matmul(Hgu, Hinv)
            S = H - _gram(HgH.transpose(0, 2, 1).astype(np.float32),
                          Hgu.transpose(0, 2, 1).astype(np.float32)).astype(float)
            rhs = g - np.einsum("tpb,tb->p", HgH, gu)
            return (cost0 if cost is None else cost), (S, rhs, np.diag(H) + 1e-9, Hinv, Hgu, gu)

        def try_step(x, system, mu):
            alpha, betas, u, cams = x
            S, rhs, diag, Hinv, Hgu, gu = system
            dg = -np.linalg.solve(S + mu * np.diag(diag), rhs)
            du = -np.einsum("tab,tb->ta", Hinv, gu + np.einsum("tpa,p->ta", Hgu, dg))
            a_new, b_new, c_new = self._moved(alpha, betas, cams, dg)
            return (a_new, b_new, u + du, c_new), self._cost(a_new, b_new, u + du, c_new)

        (alpha, betas, u, cams), cost, it = levenberg_marquardt(linearise, try_step, (alpha, betas, u, cams),
                                                                iterations, TOLERANCE, mu_max=1e4)
        err = self._residual_norms(alpha, betas, u, cams)
        per_view = [round(float(np.median(err[o])), 4) if len(o) else None for o in self.obs]
        return alpha, betas, cams, {
            "per_view_error_px": per_view,
            "feature_error_px_before": round(float(np.median(err0)), 4) if len(err0) else None,
            "feature_error_px": round(float(np.median(err)), 4) if len(err) else None,
            "parts": self._cost(alpha, betas, u, cams, parts=True), "cost_before": round(cost0, 3),
            "cost_after": round(cost, 3), "iterations": it + 1,
            "slide_mm": round(float(np.median(np.linalg.norm(u, axis=1))), 4) if T else None}
