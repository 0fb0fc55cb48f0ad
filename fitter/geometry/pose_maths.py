"""Small maths that the landmark fit (fitter.photo.coarse) and the bundle adjustment (fitter.video.bundle)
share: the SO(3) exponential of the left rotation update, the Jacobian of a perspective projection with
respect to that update, the translation and log focal, and the Cauchy IRLS weight. Pure numpy."""
import numpy as np


def hat(v):
    """(3, 3) cross-product matrix [v]x of a 3-vector."""
    x, y, z = v
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0.0]])


def exp_so3(w):
    """(3, 3) rotation exp([w]x) of a rotation vector w (radians; Rodrigues)."""
    th = np.linalg.norm(w)
    if th < 1e-12:
        return np.eye(3) + hat(w)
    k = hat(w / th)
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k


def cauchy_weights(r, s):
    """IRLS weights 1 / (1 + (r / s)²) of the Cauchy loss for residual norms r at scale s."""
    return 1.0 / (1.0 + (r / s) ** 2)


def pose_jacobian(RX, Xc, f):
    """(L, 2, 7) d(projection)/d(ω, t, log f) with the left rotation perturbation X_c = exp([ω]x) R X + t;
    also the entries a = f/z, bu = -f x/z², bv = -f y/z² of d(projection)/dX_c."""
    x, y, z = Xc.T
    a, bu, bv = f / z, -f * x / z ** 2, -f * y / z ** 2
    px, py, pz = RX.T
    J = np.zeros((len(Xc), 2, 7))
    J[:, 0, 0], J[:, 0, 1], J[:, 0, 2] = py * bu, pz * a - px * bu, -py * a
    J[:, 1, 0], J[:, 1, 1], J[:, 1, 2] = py * bv - pz * a, -px * bv, px * a
    J[:, 0, 3], J[:, 0, 5] = a, bu
    J[:, 1, 4], J[:, 1, 5] = a, bv
    J[:, 0, 6], J[:, 1, 6] = a * x, a * y  # d/dlog f = f x / z, f y / z
    return J, a, bu, bv
