"""Fine stage photometry on the face crop ([0, 1] colours): SH lighting (Eq. 5), per-region average
albedo (S2's skin-colour term), the albedo with its RTV term (Eq. 6-7), the white specular layer
(Eq. 8), and the luminance the photometric residual is measured in."""
import numpy as np
import scipy.sparse as sp

from ...detection.segment import FaceLabel
from ...geometry.rtv import difference_operators, rtv_weights
from ..texture import fit_sh_lighting, sh_basis
from ..texture import luma
from .geometry import surface_normals


def image_gradients(image):
    """Forward differences (gx, gy) of the image's luminance (0 on the last column / row)."""
    gray = luma(image)
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, :-1] = gray[:, 1:] - gray[:, :-1]
    gy[:-1] = gray[1:] - gray[:-1]
    return gx, gy


def shading(depth, camera, sh, mask):
    """(normals (h, w, 3), SH shading (h, w, 3)) of the depth inside `mask` (`surface_normals`)."""
    n = surface_normals(depth, camera, mask)
    return n, (sh_basis(n.reshape(-1, 3)) @ sh).reshape(depth.shape + (3,))


def fit_lighting(normals, image, albedo, mask, ridge=1e-3):
    """(9, 3) SH coefficients from the masked pixels (Eq. 5 with ε = 0). On a face the constant and the
    z terms are nearly collinear (most normals face the camera), so their split is weakly determined;
    the ridge on the higher orders keeps it stable (a 100× smaller ridge fits L_z closer to the truth on
    synthetic renders but gave worse refined normals end to end)."""
    return fit_sh_lighting(normals[mask], image[mask], albedo[mask], ridge=ridge)


def region_average_albedo(image, shading, labels, mask):
    """(h, w, 3) γ̄: per parsed region (skin, brows, lips, ...) the average of image / shading over the
    region's masked pixels (S2's skin-colour term); regions without pixels take the skin average."""
    out = np.zeros_like(image)
    ratio = image / np.maximum(shading, 1e-3)
    ok = mask & (shading.min(axis=2) > 0.05)
    skin = ok & (labels == FaceLabel.SKIN)
    out[:] = np.median(ratio[skin], axis=0) if skin.any() else \
        (np.median(ratio[ok], axis=0) if ok.any() else np.full(3, 0.6))
    for lab in np.unique(labels):
        sel = ok & (labels == lab)
        if lab != FaceLabel.SKIN and sel.sum() >= 20:
            out[labels == lab] = np.median(ratio[sel], axis=0)
    return np.clip(out, 0.02, 1.5)


def fit_albedo(image, shading, avg, data_mask, lam_avg, lam_rtv, sigma, iterations=2, start=None, rtol=1e-3):
    """Albedo (h, w, 3) minimising per channel Σ_data (γ S − I)² + λγ1 ‖γ − γ̄‖² + λγ2 Σ w_RTV |∂γ|²
    (Eq. 6-7, the RTV penalty by reweighting from the previous estimate), on the masked pixels only
    (γ̄ elsewhere). Each reweighted system is SPD with a diagonal ≥ λγ1, so Jacobi-preconditioned
    conjugate gradients from the previous estimate converge in a few dozen steps (measured: 4-7× faster
    than a CHOLMOD factorisation per channel here). The RTV weights are divided by their mean so that
    λγ2 keeps its meaning as the weight of an average squared gradient."""
    import scipy.sparse.linalg as spla

    h, w, _ = image.shape
    Cx, Cy = difference_operators(h, w)
    idx = np.flatnonzero(data_mask.ravel())
    keep_x = data_mask[:, :-1].ravel() & data_mask[:, 1:].ravel()   # differences inside the mask
    keep_y = data_mask[:-1, :].ravel() & data_mask[1:, :].ravel()
    Cxm, Cym = Cx[keep_x][:, idx], Cy[keep_y][:, idx]
    gamma = (avg if start is None else start).copy()
    flat = gamma.reshape(-1, 3)
    for it in range(iterations):
        wx, wy = rtv_weights(gamma, Cx, Cy, sigma)
        wx, wy = wx[keep_x], wy[keep_y]
        scale = 1.0 / max(float(np.mean(np.r_[wx, wy])), 1e-12)
        Rg = ((lam_rtv * scale) * (Cxm.T @ sp.diags(wx) @ Cxm + Cym.T @ sp.diags(wy) @ Cym)).tocsr()
        for c in range(3):
            s = shading[..., c].ravel()[idx]
            A = (Rg + sp.diags(s * s + lam_avg)).tocsr()
            rhs = s * image[..., c].ravel()[idx] + lam_avg * avg[..., c].ravel()[idx]
            M = sp.diags(1.0 / A.diagonal())
            flat[idx, c] = spla.cg(A, rhs, x0=flat[idx, c], M=M, rtol=rtol, maxiter=80)[0]
    return np.clip(gamma, 0.0, 2.0)


def fit_specular(image, rendered, mask, lam, sigma):
    """White specular layer β (h, w) ≥ 0 (Eq. 8): β₀ = positive part of the low-passed mean residual
    I − γ S over the mask; minimising Σ_c (γ_c S_c + β − I_c)² + λβ (β − β₀)² within that smooth,
    non-negative family gives β = β₀ · 3 / (3 + λβ)."""
    from scipy.ndimage import gaussian_filter

    r = np.where(mask, (image - rendered).mean(axis=2), 0.0)
    wsum = gaussian_filter(mask.astype(float), sigma)
    beta0 = np.maximum(gaussian_filter(r, sigma) / np.maximum(wsum, 1e-6), 0.0) * mask
    return beta0 * 3.0 / (3.0 + lam)
