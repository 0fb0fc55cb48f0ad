"""Rigid and similarity alignment of corresponding point sets (Umeyama 1991)."""
import numpy as np


def similarity_transform(src, dst, weights=None, scale=True):
    """s, R, t minimising Σ w ‖s R src_i + t - dst_i‖² (R a proper rotation). src, dst: (N, 3)."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    S, D = src - mu_s, dst - mu_d
    C = (D * w[:, None]).T @ S
    U, sig, Vt = np.linalg.svd(C)
    d = np.sign(np.linalg.det(U @ Vt))
    Dm = np.diag([1.0, 1.0, d])
    R = U @ Dm @ Vt
    var_s = (w * (S * S).sum(1)).sum()
    s = float(np.trace(np.diag(sig) @ Dm) / var_s) if scale else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def align(src, dst, weights=None, scale=True):
    """src mapped onto dst by the best similarity (or rigid, scale=False) transform."""
    s, R, t = similarity_transform(src, dst, weights, scale)
    return s * np.asarray(src, float) @ R.T + t
