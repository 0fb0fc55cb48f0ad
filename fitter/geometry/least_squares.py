"""The one non-linear least-squares path of the model fits: the landmark fit (fitter.photo.coarse) and the
bundle adjustment (fitter.video.bundle) both solve through `levenberg_marquardt`, with the pieces they
share: the SO(3) exponential of the left rotation update, the Jacobian of a perspective projection with
respect to that update, the translation and log focal, and the Cauchy IRLS weight. Bounds are the
caller's (its step clips or holds what sits at a bound). Pure numpy.

The damping schedule: start at MU_START; an accepted step divides μ by MU_DOWN (not below MU_MIN), a
rejected one multiplies it by MU_UP and tries again from the same linearisation, until a step lowers the
cost, `max_tries` steps have failed or μ exceeds `mu_max`; the fit stops there, after `iterations`
linearisations, or when an accepted step lowers the cost by less than `tol` of it.
"""
import numpy as np

MU_START, MU_DOWN, MU_UP, MU_MIN = 1e-3, 3.0, 4.0, 1e-7


def levenberg_marquardt(linearise, try_step, x, iterations, tol, max_tries=None, mu_max=None):
    """Minimise a cost by damped Gauss–Newton steps (the schedule above).

    linearise(x, cost) -> (cost, system): the cost at x (`cost` is the last accepted step's, None at the
    start: return it as it is where reweighting does not change it) and whatever the step needs (normal
    equations, a Schur complement). try_step(x, system, mu) -> (candidate, its cost): the step damped by mu.
    Returns (x, cost, index of the last iteration). One of max_tries and mu_max must be given: the damping
    stops there when no step lowers the cost (at the minimum, every step is rejected)."""
    if max_tries is None and mu_max is None:
        raise ValueError("levenberg_marquardt needs max_tries or mu_max: the damping must stop somewhere")
    mu, cost, it = MU_START, None, 0
    for it in range(iterations):
        cost, system = linearise(x, cost)
        tries, done = 0, False
        while True:
            candidate, candidate_cost = try_step(x, system, mu)
            if candidate_cost < cost:
                done = (cost - candidate_cost) < tol * cost
                x, cost = candidate, candidate_cost
                mu = max(mu / MU_DOWN, MU_MIN)
                break
            mu *= MU_UP
            tries += 1
            if (max_tries is not None and tries >= max_tries) or (mu_max is not None and mu > mu_max):
                done = True
                break
        if done:
            break
    return x, cost, it


def hat(v):
    """(3, 3) cross-product matrix [v]x of a 3-vector."""
    x, y, z = v
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0.0]])


def exp_so3(w):
    """(3, 3) rotation exp([w]x) of a rotation vector w (radians; Rodrigues). Written out rather than
    scipy's Rotation.from_rotvec, which agrees to 1e-15 (tests/test_camera.py) but made the landmark fit of
    one photo 17 % slower (5.26 → 6.15 ms: it is called for every image at every damped step)."""
    th = np.linalg.norm(w)
    if th < 1e-12:
        return np.eye(3) + hat(w)
    k = hat(w / th)
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k


def cauchy_weights(r, s):
    """IRLS weights 1 / (1 + (r / s)²) of the Cauchy loss for residual norms r at scale s."""
    return 1.0 / (1.0 + (r / s) ** 2)


def pose_jacobian(RX, Xc, f, fy=None):
    """(L, 2, 7) d(projection)/d(ω, t, log f) with the left rotation perturbation X_c = exp([ω]x) R X + t,
    for focal lengths f along x and fy along y (default f; log f scales both); also the entries ax = f/z,
    ay = fy/z, bu = -f x/z², bv = -fy y/z² of d(projection)/dX_c."""
    x, y, z = Xc.T
    fy = f if fy is None else fy
    ax, ay, bu, bv = f / z, fy / z, -f * x / z ** 2, -fy * y / z ** 2
    px, py, pz = RX.T
    J = np.zeros((len(Xc), 2, 7))
    J[:, 0, 0], J[:, 0, 1], J[:, 0, 2] = py * bu, pz * ax - px * bu, -py * ax
    J[:, 1, 0], J[:, 1, 1], J[:, 1, 2] = py * bv - pz * ay, -px * bv, px * ay
    J[:, 0, 3], J[:, 0, 5] = ax, bu
    J[:, 1, 4], J[:, 1, 5] = ay, bv
    J[:, 0, 6], J[:, 1, 6] = ax * x, ay * y  # d/dlog f = f x / z, fy y / z
    return J, ax, ay, bu, bv
