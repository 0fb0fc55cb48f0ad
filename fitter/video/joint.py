"""The joint fit of several views of one person: one identity α, per view pose and expression
(fitter.photo.coarse.fit_landmarks in its multi-image mode), with views that do not belong dropped and the
rest refitted.

Two signs that a view does not belong, each judged against the other views (robustly: m the median,
s the normal-consistent MAD (scipy, 1.4826… × the median absolute deviation), a view is an outlier when its value > max(m + OUTLIER_MADS · s, ratio · m, m + gap)):
- identity disagreement: its landmark error in the joint fit over its error when fitted alone (its own
  identity). Another person's face fits the shared identity worse than its own (ratio
  DISAGREEMENT_RATIO, gap DISAGREEMENT_GAP); measured on a synthetic video with one frame of another
  person: 1.55 against 0.86-1.07 for the person's own frames.
- residual: its joint-fit landmark error (fraction of its interocular distance) divided by the coarse
  stage's noise growth with yaw (1 + (yaw / 60°)²): motion blur and detector failures (ratio
  RESIDUAL_RATIO, gap RESIDUAL_GAP).
Nothing is dropped from fewer than MIN_VIEWS_TO_DROP views; at most MAX_ROUNDS fits.

The landmark noise of the joint fit: the detector's errors on one person's views are correlated (the
same face, the same biases), so n views do not carry n independent measurements. With a correlation ρ
between views (LANDMARK_CORRELATION) they carry n_eff = n / (1 + (n - 1) ρ), and the landmark σ of the
joint fit is σ × sqrt(n / n_eff) = σ sqrt(1 + (n - 1) ρ). Measured on the mini MICC benchmark (four
subjects × three settings, ~13 views per video; scripted refits of the same views, MICC error of the
video shape against the average single-frame fit): independent views (ρ = 0) were 0.018 mm better than
the single frames on average, n_eff = 4 (ρ ≈ 0.19) 0.080 mm, n_eff = 2 (ρ ≈ 0.46) 0.105 mm; the
synthetic identity's vertex error rose by 0.05-0.2 mm with ρ. ρ = 0.45.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from ..geometry.camera import yaw_of_rotation
from ..photo.coarse import NOISE_FRACTION_OF_IOD, YAW_NOISE_DEG, CoarseFit, fit_landmarks

OUTLIER_MADS = 4.0
DISAGREEMENT_RATIO, DISAGREEMENT_GAP = 1.3, 0.15
RESIDUAL_RATIO, RESIDUAL_GAP = 1.8, 0.008
MIN_VIEWS_TO_DROP = 3
MAX_ROUNDS = 3
LANDMARK_CORRELATION = 0.45


def joint_noise_fraction(n_views):
    """The landmark noise σ (fraction of the interocular distance) of a joint fit of n views."""
    return NOISE_FRACTION_OF_IOD * float(np.sqrt(1.0 + (max(n_views, 1) - 1) * LANDMARK_CORRELATION))


@dataclass
class JointFit:
    fit: CoarseFit            # the final fit of the kept views
    kept: list                # indices into the views given
    dropped: dict             # view index -> one-line reason
    rounds: int
    seconds: float
    history: list = field(default_factory=list)  # per round: views, errors, disagreements
    shared_expression: bool = False  # one expression for every view


def robust_outliers(values, ratio, gap):
    """Indices of the values above max(m + OUTLIER_MADS · s, ratio · m, m + gap), and that threshold."""
    from scipy.stats import median_abs_deviation  # here: scipy.stats takes 0.5 s to import

    v = np.asarray(values, float)
    m = float(np.median(v))
    s = float(median_abs_deviation(v, scale="normal"))
    threshold = max(m + OUTLIER_MADS * s, ratio * m, m + gap)
    return [int(i) for i in np.flatnonzero(v > threshold)], threshold


def fit_views(prepared, points_list, cameras, free_focal=False, max_rounds=MAX_ROUNDS, shared_expression=False):
    """Fit the views jointly, drop the ones that do not belong and refit. points_list: (478, 2) landmarks
    per view; cameras: a Camera per view (intrinsics, size); free_focal: whether the focal lengths are solved;
    shared_expression: one expression for every view (fitter.photo.coarse.fit_landmarks). Returns a JointFit."""
    t0 = time.perf_counter()
    n = len(points_list)
    kept = list(range(n))
    dropped, history = {}, []
    alone = None
    if n >= MIN_VIEWS_TO_DROP:  # each view's error with its own identity (once)
        alone = np.array([fit_landmarks(prepared, [points_list[i]], [cameras[i]], free_focal=free_focal)
                          .images[0].error_iod for i in range(n)])
    for rounds in range(1, max_rounds + 1):
        fit = fit_landmarks(prepared, [points_list[i] for i in kept], [cameras[i] for i in kept],
                            free_focal=free_focal, noise_fraction=joint_noise_fraction(len(kept)), shared_expression=shared_expression)
        errors = np.array([im.error_iod for im in fit.images])
        record = {"views": len(kept), "errors_iod": [round(float(e), 5) for e in errors]}
        history.append(record)
        if alone is None or len(kept) < MIN_VIEWS_TO_DROP or rounds == max_rounds:
            break
        disagreement = errors / np.maximum(alone[kept], 1e-9)
        noise = 1.0 + (np.array([yaw_of_rotation(im.camera.R) for im in fit.images]) / YAW_NOISE_DEG) ** 2
        record["disagreement"] = [round(float(d), 4) for d in disagreement]
        bad_id, thr_id = robust_outliers(disagreement, DISAGREEMENT_RATIO, DISAGREEMENT_GAP)
        bad_res, thr_res = robust_outliers(errors / noise, RESIDUAL_RATIO, RESIDUAL_GAP)
        bad = sorted(set(bad_id) | set(bad_res))
        if not bad or len(kept) - len(bad) < 1:
            break
        for j in bad:
            dropped[kept[j]] = (
                f"identity disagreement {disagreement[j]:.2f} is an outlier (threshold {thr_id:.2f}): another person?"
                if j in bad_id else
                f"landmark residual {errors[j]:.4f} IOD is an outlier for its yaw (threshold {thr_res * noise[j]:.4f}): "
                f"blur or a detector failure")
        kept = [i for k, i in enumerate(kept) if k not in set(bad)]
    return JointFit(fit, kept, dropped, rounds, time.perf_counter() - t0, history, shared_expression)
