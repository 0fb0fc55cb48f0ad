"""Relative Total Variation (Xu, Yan, Xia, Jia 2012): split an image into structure and texture.

The fine stage's detail-reducing albedo term (S2 Eq. 6–7) uses it: fine, repeated texture (pores,
stubble, printed pattern) goes to the texture layer, edges that carry geometry or shading stay in the
structure. Structure S minimises

    Σ_p (S_p − I_p)² + λ Σ_p ( D_x(p) / (L_x(p) + ε) + D_y(p) / (L_y(p) + ε) )

with D = Σ_q g_σ(p, q) |∂S_q| (windowed total variation: large for texture and edges alike) and
L = |Σ_q g_σ(p, q) ∂S_q| (windowed inherent variation: large only where the gradients in the window
agree, i.e. at an edge). It is solved as in the paper by iterative reweighting: each iteration solves
the sparse SPD system (I + λ Cᵀ diag(u w) C) S = I, with C the forward differences, u = g_σ * 1/(|g_σ * ∂S|
+ ε) and w = 1/(|∂S| + ε_s) from the previous S, and σ halves every iteration. All channels share one
matrix; the 5-point pattern is analysed by CHOLMOD once per image size (`fitter.geometry.cholesky.FactorCache`).
"""
import itertools

import numpy as np
import scipy.sparse as sp

from .cholesky import FactorCache

_caches = {}
_solve_ids = itertools.count()  # every reweighted matrix is new: a key that is never reused


def _differences(H, W):
    """Forward differences (x then y) of an H×W image flattened row-major: Cx (H·(W−1), H·W), Cy."""
    idx = np.arange(H * W).reshape(H, W)
    a, b = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    Cx = sp.csr_matrix((np.r_[-np.ones(len(a)), np.ones(len(a))], (np.r_[np.arange(len(a)), np.arange(len(a))],
                                                                     np.r_[a, b])), shape=(len(a), H * W))
    a, b = idx[:-1, :].ravel(), idx[1:, :].ravel()
    Cy = sp.csr_matrix((np.r_[-np.ones(len(a)), np.ones(len(a))], (np.r_[np.arange(len(a)), np.arange(len(a))],
                                                                     np.r_[a, b])), shape=(len(a), H * W))
    return Cx, Cy


def _system(H, W):
    key = (H, W)
    if key not in _caches:
        Cx, Cy = difference_operators(H, W)
        pattern = (sp.identity(H * W) + Cx.T @ Cx + Cy.T @ Cy).tocsc()
        _caches[key] = (Cx, Cy, FactorCache(pattern, max_factors=1))
        if len(_caches) > 4:
            _caches.pop(next(iter(_caches)))
    return _caches[key]


_diff_cache = {}


def difference_operators(H, W):
    """(Cx, Cy): forward differences of an H×W grid (built once per size)."""
    if (H, W) not in _diff_cache:
        if len(_diff_cache) > 4:
            _diff_cache.pop(next(iter(_diff_cache)))
        _diff_cache[(H, W)] = _differences(H, W)
    return _diff_cache[(H, W)]


def rtv_weights(S, Cx, Cy, sigma, eps=1e-3, eps_s=0.02):
    """Per-difference RTV weights (wx (H·(W−1),), wy (H−1)·W,)) of the current structure S (H, W, C):
    u·w with u = g_σ * 1/(|g_σ * ∂S| + ε) and w = 1/(|∂S| + ε_s); channels share them (mean gradient)."""
    from scipy.ndimage import gaussian_filter

    H, W, C = S.shape
    flat = S.reshape(H * W, C)
    gx = (Cx @ flat).reshape(H, W - 1, C).mean(axis=2)
    gy = (Cy @ flat).reshape(H - 1, W, C).mean(axis=2)
    ux = gaussian_filter(1.0 / (np.abs(gaussian_filter(gx, sigma)) + eps), sigma)
    uy = gaussian_filter(1.0 / (np.abs(gaussian_filter(gy, sigma)) + eps), sigma)
    return (ux / (np.abs(gx) + eps_s)).ravel(), (uy / (np.abs(gy) + eps_s)).ravel()


def rtv_structure(image, lam=0.01, sigma=3.0, iterations=4, eps=1e-3, eps_s=0.02):
    """Structure layer (H, W[, C]) float of `image` (values in [0, 1]); texture = image − structure.

    lam: weight of the RTV penalty (larger: more texture removed); sigma: the texture scale in pixels
    (the window of g_σ), halved every iteration; eps, eps_s: the paper's small constants."""
    I = np.asarray(image, float)
    mono = I.ndim == 2
    I3 = I[..., None] if mono else I
    H, W, C = I3.shape
    Cx, Cy, cache = _system(H, W)
    Iflat = I3.reshape(H * W, C)
    S = Iflat.copy()
    s = float(sigma)
    for it in range(iterations):
        wx, wy = rtv_weights(S.reshape(H, W, C), Cx, Cy, s, eps, eps_s)
        A = (sp.identity(H * W) + lam * (Cx.T @ sp.diags(wx) @ Cx + Cy.T @ sp.diags(wy) @ Cy)).tocsc()
        S, _ = cache.solve(("rtv", next(_solve_ids)), lambda: A, Iflat)
        s = max(s / 2.0, 0.5)
    out = S.reshape(H, W, C)
    return out[..., 0] if mono else out
