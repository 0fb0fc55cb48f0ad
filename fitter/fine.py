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
   reweighting (fitter.rtv), each reweighted system solved by preconditioned conjugate gradients;
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

How the Ceres problem is cut (DESIGN.md "Fine"): one scalar parameter block per unknown pixel, residuals
grouped in 4×4-pixel tiles (one Python cost function per tile, 3 rows per pixel). All residuals and
Jacobians are computed by numpy for every tile at once when Ceres starts evaluating a new point, and
each tile's callback only copies its slice. pyceres 2.6 does not expose
Problem::Options::evaluation_callback, so the stage finds the point itself: the first tile evaluated in a
pass reads Ceres's whole state vector, whose layout (where each unknown sits in it) is learned from the
pointers Ceres hands to the tiles in the first pass and checked on every later call; the same layout
gives where Ceres keeps each tile's Jacobian blocks, so a tile's Jacobian is one memory copy (also
checked on every call, by its first and last block's addresses; block by block otherwise).

Write-back: the model mesh (median edge 2.8 mm on ICT's face) cannot hold wrinkle-scale detail, so the
refined depth is kept at pixel resolution (`depth`, written as depth_refined.png and detail.obj), and
the mesh gets what its vertices can carry: each visible vertex of the refined region is displaced along
its normal by the refined depth change under it (feathered to zero at the region's border).
"""
import ctypes
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .camera import Camera, crop_matrix
from .errors import InputError
from .mesh import vertex_normals
from .render import get_renderer
from .rtv import difference_operators, rtv_weights
from .texture import SH_C, sh_basis

TILE = 4
LUMA = np.array([0.299, 0.587, 0.114])   # the photometric residual is the luminance of the colour residual


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
        return depth_normals(d, self.camera.K), valid

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


# --- crop --------------------------------------------------------------------------------------------
def crop_box(points_2d, width, height, margin):
    """Square (x0, y0, side) around 2D points (N, 2), with a margin; may extend past the image."""
    lo, hi = points_2d.min(0), points_2d.max(0)
    side = float((hi - lo).max()) * (1 + 2 * margin)
    c = (lo + hi) / 2
    side_i = int(np.ceil(side))
    x0, y0 = int(np.floor(c[0] - side_i / 2)), int(np.floor(c[1] - side_i / 2))
    return x0, y0, side_i


def crop_image(image, box, size):
    """The box (x0, y0, side) of `image` (H, W, 3) resampled to size×size (area-averaged when shrinking;
    outside the photo: edge pixels repeated) and the matrix A (3×3) with crop pixel = A · photo pixel."""
    import cv2

    x0, y0, side = box
    H, W = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - W, y0 + side - H)
    src = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    patch = src[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    interp = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
    out = cv2.resize(patch, (size, size), interpolation=interp)
    return out, crop_matrix(x0, y0, side, size)


# --- normals from depth --------------------------------------------------------------------------------
def pixel_rays(K, h, w):
    """(h, w, 3) K⁻¹ [u, v, 1] for every pixel centre."""
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=2)


def forward_normals(z, z_right, z_down, r, r_right, r_down):
    """The forward-difference normal of pixels (any leading shape, last axis xyz): with X = z r and its
    right and lower neighbours, a = X_right − X, b = X_down − X, m = b × a (camera frame, pointing at
    the camera). Returns (unit normal, |m|, a, b); a and b also give m's derivatives w.r.t. the depths."""
    X = z[..., None] * r
    a = z_right[..., None] * r_right - X
    b = z_down[..., None] * r_down - X
    m = np.cross(b, a)
    norm = np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)
    return m / norm, norm, a, b


def depth_normals(depth, K):
    """(h, w, 3) unit normals of a depth map (mm) by forward differences (`forward_normals`); the last
    row and column use depths repeated and rays extrapolated past the border."""
    r = pixel_rays(K, *depth.shape)
    zr = np.concatenate([depth[:, 1:], depth[:, -1:]], axis=1)
    zd = np.concatenate([depth[1:], depth[-1:]], axis=0)
    rr = np.concatenate([r[:, 1:], r[:, -1:] + (r[:, -1:] - r[:, -2:-1])], axis=1)
    rd = np.concatenate([r[1:], r[-1:] + (r[-1:] - r[-2:-1])], axis=0)
    return forward_normals(depth, zr, zd, r, rr, rd)[0]


def sh_gradient(n):
    """(N, 9, 3) derivative of each SH basis function (fitter.texture.sh_basis) w.r.t. the normal."""
    x, y, z = n.T
    c0, c1, c2, c3, c4 = SH_C
    G = np.zeros((len(n), 9, 3))
    G[:, 1, 1] = c1
    G[:, 2, 2] = c1
    G[:, 3, 0] = c1
    G[:, 4, 0], G[:, 4, 1] = c3 * y, c3 * x
    G[:, 5, 1], G[:, 5, 2] = c3 * z, c3 * y
    G[:, 6, 2] = 6 * c2 * z
    G[:, 7, 0], G[:, 7, 2] = c3 * z, c3 * x
    G[:, 8, 0], G[:, 8, 1] = 2 * c4 * x, -2 * c4 * y
    return G


# --- lighting, albedo, specular -----------------------------------------------------------------------
def fit_lighting(normals, image, albedo, mask, ridge=1e-3):
    """(9, 3) SH coefficients from the masked pixels (Eq. 5 with ε = 0). On a face the constant and the
    z terms are nearly collinear (most normals face the camera), so their split is weakly determined;
    the ridge on the higher orders keeps it stable (a 100× smaller ridge fits L_z closer to the truth on
    synthetic renders but gave worse refined normals end to end)."""
    from .texture import fit_sh_lighting

    return fit_sh_lighting(normals[mask], image[mask], albedo[mask], ridge=ridge)


def region_average_albedo(image, shading, labels, mask):
    """(h, w, 3) γ̄: per parsed region (skin, brows, lips, ...) the average of image / shading over the
    region's masked pixels (S2's skin-colour term); regions without pixels take the skin average."""
    out = np.zeros_like(image)
    ratio = image / np.maximum(shading, 1e-3)
    ok = mask & (shading.min(axis=2) > 0.05)
    from .segment import FaceLabel

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


# --- the depth problem (Ceres) -------------------------------------------------------------------------
class DepthProblem:
    """Eq. 9 on the unknown pixels, cut into 4×4 residual tiles with scalar parameter blocks."""

    def __init__(self, depth0, known, unknown, skin, K, image, gray_gradients, gradient_term=False):
        # rows per pixel: photometric (luminance of the colour residual), prior, Laplacian
        # [, gradient matching in x and y]
        self.ROWS = 5 if gradient_term else 3
        self.h, self.w = depth0.shape
        self.K = K
        self.depth0 = depth0
        self.unknown = unknown
        self.uidx = np.full(depth0.shape, -1, np.int64)
        self.upix = np.flatnonzero(unknown.ravel())
        self.uidx.ravel()[self.upix] = np.arange(len(self.upix))
        self.z = depth0.astype(float).copy()
        self.image = image
        self.gx, self.gy = gray_gradients
        h, w = self.h, self.w
        # photometric pixels: skin, with right and lower neighbours on the surface, touching an unknown
        right = np.zeros_like(known)
        right[:, :-1] = known[:, 1:]
        down = np.zeros_like(known)
        down[:-1] = known[1:]
        ur = np.zeros_like(unknown)
        ur[:, :-1] = unknown[:, 1:]
        ud = np.zeros_like(unknown)
        ud[:-1] = unknown[1:]
        self.photo = skin & known & right & down & (unknown | ur | ud)
        # tiles: every 4×4 block holding an unknown or a photometric pixel
        ty, tx = np.divmod(np.arange(h * w), w)
        tile_of = (ty // TILE) * ((w + TILE - 1) // TILE) + tx // TILE
        active = (unknown | self.photo).ravel()
        tiles, self.pix_tile = np.unique(tile_of[active], return_inverse=True)  # tile of each residual pixel
        self.pix = np.flatnonzero(active)                          # residual pixels (flat index)
        self.n_tiles = len(tiles)
        self.pix_slot = (ty[self.pix] % TILE) * TILE + tx[self.pix] % TILE  # slot within the tile
        self.R = TILE * TILE * self.ROWS
        # which unknowns each residual pixel touches: itself, right, down, left, up
        offs = np.array([0, 1, w, -1, -w])
        nb = self.pix[:, None] + offs[None, :]
        inside = np.ones_like(nb, bool)
        px, py = tx[self.pix], ty[self.pix]
        inside[:, 1] = px < w - 1
        inside[:, 2] = py < h - 1
        inside[:, 3] = px > 0
        inside[:, 4] = py > 0
        nb = np.where(inside, nb, self.pix[:, None])
        nbu = np.where(inside, self.uidx.ravel()[nb], -1)
        self.nb_inside = inside
        pairs_t = np.repeat(self.pix_tile, 5)[nbu.ravel() >= 0]
        pairs_u = nbu.ravel()[nbu.ravel() >= 0]
        key = np.unique(pairs_t * len(self.upix) + pairs_u)
        kt, ku = np.divmod(key, len(self.upix))
        starts = np.searchsorted(kt, np.arange(self.n_tiles + 1))
        self.tile_params = [ku[starts[t]:starts[t + 1]] for t in range(self.n_tiles)]
        # the parameters whose pixel lies in the tile itself: each unknown is read once, by its own tile
        tile_of_unknown = np.empty(len(self.upix), np.int64)
        is_unknown = self.uidx.ravel()[self.pix] >= 0
        tile_of_unknown[self.uidx.ravel()[self.pix[is_unknown]]] = self.pix_tile[is_unknown]
        own = tile_of_unknown[ku] == kt
        self.own_cols = [np.flatnonzero(own[starts[t]:starts[t + 1]]) for t in range(self.n_tiles)]
        self.key, self.key_starts = key, starts
        self.nb, self.nbu = nb, nbu
        self.R_all = np.zeros((self.n_tiles, self.R))
        # Jacobians of all tiles in one array, tile after tile, each (its parameters × R) parameter-major:
        # the layout of Ceres's own block-sparse Jacobian values for this problem
        n_params = np.diff(starts)
        self.j_offset = np.r_[0, np.cumsum(n_params * self.R)]
        self.J_all = np.zeros(int(self.j_offset[-1]))
        self.sh = self.albedo = self.specular = None
        self.pass_states = {}         # Ceres's layout for this problem per linear solver, learned once
        self.python_seconds = 0.0
        self.evaluations = 0
        self._prepare_pixels()
        self.gx_p, self.gy_p = self.gx.ravel()[self.pix], self.gy.ravel()[self.pix]

    def local_col(self, tiles, unknowns):
        """Column of each (tile, unknown) pair within its tile's parameter list."""
        pos = np.searchsorted(self.key, tiles * len(self.upix) + unknowns)
        return pos - self.key_starts[tiles]

    def _prepare_pixels(self):
        """Index arrays of the residual pixels: neighbours, rays, where each residual and each Jacobian
        entry lives in R_all / J_all (computed once per problem)."""
        h, w = self.h, self.w
        pix = self.pix
        py, px = np.divmod(pix, w)
        K = self.K

        def rays(u, v):
            return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(len(u))], axis=1)

        self.r_p, self.r_r, self.r_d = rays(px, py), rays(px + 1.0, py), rays(px, py + 1.0)
        self.p_r = np.where(px < w - 1, pix + 1, pix)
        self.p_d = np.where(py < h - 1, pix + w, pix)
        self.ph = self.photo.ravel()[pix]
        self.photo_weight = np.ones(len(pix))   # weights of the photometric rows (set_photo_weights)
        self.isu = self.uidx.ravel()[pix] >= 0
        self.d0_p = self.depth0.ravel()[pix]
        self.lap_ok = self.isu & np.all(self.nb_inside, axis=1)
        t = np.repeat(self.pix_tile[:, None], 5, axis=1)
        self.cols = np.where(self.nbu >= 0, self.local_col(t, np.maximum(self.nbu, 0)), -1)
        tl, base = self.pix_tile, self.pix_slot * self.ROWS
        self.res_at = [tl * self.R + base + k for k in range(self.ROWS)]
        R = self.R
        block0 = self.j_offset[:-1] // R  # global index of each tile's first Jacobian block

        def flat(sel, which, row):  # where (pixel row, parameter) lives in J_all under the current layout
            return self.block_position[block0[tl[sel]] + self.cols[sel, which]] * R + base[sel] + row

        self._flat = flat
        self.ph_blocks = []
        for which in range(3):
            sel = (self.cols[:, which] >= 0) & self.ph
            self.ph_blocks.append((sel, block0[tl[sel]] + self.cols[sel, which], base[sel]))
        self.set_block_layout(np.arange(int(self.j_offset[-1]) // R))

    def set_block_layout(self, position):
        """Place Jacobian block g (tile t's k-th parameter, g = first block of t + k) at `position[g]`
        (Ceres orders a tile's blocks by its own column order); moves the values already written."""
        R = self.R
        old = getattr(self, "block_position", None)
        if old is not None and hasattr(self, "J_all"):
            J = np.empty_like(self.J_all).reshape(-1, R)
            J[position] = self.J_all.reshape(-1, R)[old]
            self.J_all = J.reshape(-1)
        self.block_position = np.asarray(position)
        self.J_address = self.J_all.ctypes.data
        self.ph_entries = [(sel, self.block_position[g] * R + rows) for sel, g, rows in self.ph_blocks]

    def set_terms(self, sh, albedo, specular, lam):
        """Lighting (9, 3), albedo (h, w, 3), specular (h, w) and the phase's (λd1, λd2, λd3, λd4); writes
        the Jacobian entries that do not depend on the depth (prior, Laplacian, gradient terms)."""
        self.sh, self.albedo, self.specular = sh, albedo, specular
        self.lam = lam
        pix = self.pix
        self.alb_p = albedo.reshape(-1, 3)[pix]
        self.img_p = self.image.reshape(-1, 3)[pix]
        self.spec_p = specular.ravel()[pix]
        l1, l2, l3, l4 = lam
        J = self.J_all  # every entry written here sits at a fixed place; the others stay zero
        cols, flat = self.cols, self._flat
        sel = cols[:, 0] >= 0
        J[flat(sel, 0, 1)] = np.sqrt(l1)
        for j, coef in ((0, 4.0), (1, -1.0), (2, -1.0), (3, -1.0), (4, -1.0)):
            sel = (cols[:, j] >= 0) & self.lap_ok
            J[flat(sel, j, 2)] = np.sqrt(l2) * coef
        if l3 > 0 and self.ROWS < 5:
            raise ValueError("this DepthProblem was built without the gradient-matching rows")
        for row, j in (((3, 1), (4, 2)) if self.ROWS == 5 else ()):
            sel = (cols[:, j] >= 0) & self.ph
            J[flat(sel, j, row)] = np.sqrt(l3) * l4
            sel = (cols[:, 0] >= 0) & self.ph
            J[flat(sel, 0, row)] = -np.sqrt(l3) * l4

    def set_photo_weights(self, robust_scale=3.0, highlight_scale=0.0):
        """Weights √w on the photometric rows, a product of two factors (1 where a factor is off):
        - Cauchy, 1/√(1 + (r/σ)²) from the residuals at the current depth, σ = `robust_scale` × 1.4826 ×
          median |r|: pixels the shading model cannot explain at all (glasses frames, hair strands) stop
          pulling the depth (IRLS, one reweighting per phase);
        - highlights, 1/√(1 + (β/`highlight_scale`)²) with β the specular layer ([0, 1] colour units): a
          highlight follows the normal far more sharply than the low-passed β can, so where β is large the
          residual is the highlight's structure rather than diffuse shading."""
        self.photo_weight = np.ones(len(self.pix))
        weight = np.ones(len(self.pix))
        if robust_scale:
            self.compute(self.z.ravel()[self.upix], False)
            r = self.R_all.reshape(-1)[self.res_at[0]]
            sigma = robust_scale * 1.4826 * max(float(np.median(np.abs(r[self.ph]))), 1e-6)
            weight /= np.sqrt(1.0 + (r / sigma) ** 2)
        if highlight_scale:
            weight /= np.sqrt(1.0 + (self.spec_p / highlight_scale) ** 2)
        self.photo_weight = weight
        return weight

    def compute(self, z_unknown, jacobians):
        """Fill R_all (and the depth-dependent entries of J_all) at the given unknown depths, for every
        tile at once."""
        t0 = time.perf_counter()
        zf = self.z.reshape(-1)
        zf[self.upix] = z_unknown
        l1, l2, l3, l4 = self.lam
        pix, ph = self.pix, self.ph
        zp = zf[pix]
        n, mn, a, b = forward_normals(zp, zf[self.p_r], zf[self.p_d], self.r_p, self.r_r, self.r_d)
        res_rgb = self.alb_p * (sh_basis(n) @ self.sh) + self.spec_p[:, None] - self.img_p
        nbz = zf[self.nb]
        R = self.R_all.reshape(-1)
        R[self.res_at[0]] = (res_rgb @ LUMA) * ph * self.photo_weight
        R[self.res_at[1]] = np.sqrt(l1) * (zp - self.d0_p) * self.isu
        R[self.res_at[2]] = np.sqrt(l2) * (4 * nbz[:, 0] - nbz[:, 1:].sum(1)) * self.lap_ok
        if self.ROWS == 5:  # gradient matching on the height h = −z: ∇I − λd4 ∇h = ∇I + λd4 ∇z
            R[self.res_at[3]] = np.sqrt(l3) * (self.gx_p + l4 * (nbz[:, 1] - nbz[:, 0])) * ph
            R[self.res_at[4]] = np.sqrt(l3) * (self.gy_p + l4 * (nbz[:, 2] - nbz[:, 0])) * ph
        if jacobians:
            J = self.J_all
            dS_dn = np.einsum("kc,nkj->ncj", self.sh, sh_gradient(n))     # (N, 3 colours, 3)
            for which, dm in enumerate((np.cross(self.r_p, b - a), np.cross(b, self.r_r), np.cross(self.r_d, a))):
                sel, at = self.ph_entries[which]
                nn, dms = n[sel], dm[sel]
                dn = (dms - nn * (nn * dms).sum(1, keepdims=True)) / mn[sel]
                J[at] = ((self.alb_p[sel] * np.einsum("ncj,nj->nc", dS_dn[sel], dn)) @ LUMA) * self.photo_weight[sel]
        self.evaluations += 1
        self.python_seconds += time.perf_counter() - t0

    def photometric_rms(self, z_unknown=None):
        """RMS colour residual ([0, 1] units) over the photometric pixels, at the current depths or with
        the unknowns set to `z_unknown`; unweighted by the robust weights."""
        zf = self.z.ravel().copy()
        if z_unknown is not None:
            zf[self.upix] = z_unknown
        ph = self.ph
        if not ph.any():
            return 0.0
        n = forward_normals(zf[self.pix], zf[self.p_r], zf[self.p_d], self.r_p, self.r_r, self.r_d)[0][ph]
        pred = self.alb_p[ph] * (sh_basis(n) @ self.sh) + self.spec_p[ph][:, None]
        return float(np.sqrt(np.mean((pred - self.img_p[ph]) ** 2)))

    def solve(self, iterations, linear_solver, threads=2):
        """Run Ceres from the current depths; returns a dict of its summary figures."""
        import pyceres

        t_build = time.perf_counter()
        if linear_solver not in self.pass_states:  # Ceres's layout depends on the linear solver's matrix
            self.pass_states[linear_solver] = _PassState(self)
        state = self.pass_states[linear_solver]
        state.started = state.done = 0
        state.error = None
        state.copy_seconds = 0.0
        params = np.ascontiguousarray(self.z.ravel()[self.upix], dtype=float)
        blocks = [params[i:i + 1] for i in range(len(params))]
        problem = pyceres.Problem()
        costs = []
        for t in range(self.n_tiles):
            cost = _tile_cost(state, t, len(self.tile_params[t]), self.R)
            costs.append(cost)
            problem.add_residual_block(cost, None, [blocks[u] for u in self.tile_params[t]])
        build = time.perf_counter() - t_build
        opts = pyceres.SolverOptions()
        opts.linear_solver_type = getattr(pyceres.LinearSolverType, linear_solver)
        opts.max_num_iterations = int(iterations)
        opts.num_threads = threads
        opts.minimizer_progress_to_stdout = False
        opts.logging_type = pyceres.LoggingType.SILENT
        opts.function_tolerance = 1e-5
        summary = pyceres.SolverSummary()
        self.python_seconds = 0.0
        t0 = time.perf_counter()
        pyceres.solve(opts, problem, summary)
        wall = time.perf_counter() - t0
        if state.error:
            raise RuntimeError(state.error)
        self.z.ravel()[self.upix] = params
        return {"iterations": int(summary.num_successful_steps + summary.num_unsuccessful_steps),
                "initial_cost": float(summary.initial_cost), "final_cost": float(summary.final_cost),
                "termination": str(summary.termination_type).split(".")[-1],
                "seconds": round(wall, 4), "python_seconds": round(self.python_seconds + state.copy_seconds, 4),
                "numpy_seconds": round(self.python_seconds, 4),
                "first_pass_seconds": round(getattr(state, "first_pass_seconds", 0.0), 4),
                "memmove": state.n_memmove, "blockwise": state.n_blockwise, "copy_seconds": round(state.copy_seconds, 4),
                "linear_solver_seconds": round(float(summary.linear_solver_time_in_seconds), 4),
                "jacobian_seconds": round(float(summary.jacobian_evaluation_time_in_seconds), 4),
                "residual_seconds": round(float(summary.residual_evaluation_time_in_seconds), 4),
                "preprocessor_seconds": round(float(summary.preprocessor_time_in_seconds), 4),
                "build_seconds": round(build, 4),
                "evaluations": int(self.evaluations), "tiles": int(self.n_tiles), "unknowns": int(len(self.upix))}


class _PassState:
    """Hands Ceres the pass's values (see the module docstring).

    First pass (Ceres evaluating the starting point, which the problem already holds): every tile copies
    its slice and reports where Ceres keeps its parameters, its residuals and its Jacobian blocks. From
    that the position of each unknown in Ceres's state vector is known, and whether Ceres's residuals
    and Jacobian values are laid out tile after tile as R_all and J_all are (they are: Ceres's program
    evaluator writes one block-sparse matrix in residual-block order). In every later pass the first
    tile evaluated reads the whole state, triggers one vectorised evaluation and, when the layout
    matched, writes all residuals (and Jacobians) with one memory copy each; every tile checks that its
    own buffers are where that layout says, so a different layout stops the solve with an error
    instead of being misread."""

    def __init__(self, problem: DepthProblem):
        self.problem = problem
        self.n_tiles = problem.n_tiles
        self.n_memmove = self.n_blockwise = 0   # Jacobian writes: one copy per tile / block by block
        self.bulk_copies = True       # False: always write block by block (the reference path, for tests)
        self.started = 0             # tiles that began / finished the current pass
        self.done = 0
        self.first_pass = True
        self.layout = {}
        self.copy_seconds = 0.0
        self.lock = threading.Lock()
        self.layout_known = False     # Ceres's Jacobian blocks are laid out as J_all (checked in pass 1)
        self.pass_jac_base = None
        self.pass_base = 0
        self.error = None

    def start_pass(self, tile, ptr, jac_ptr):
        """First tile of a pass: evaluate every tile at Ceres's point (read from its state vector)."""
        p = self.problem
        if self.first_pass:
            self.first_pass_t0 = time.perf_counter()
            p.compute(p.z.ravel()[p.upix], True)
            return
        self.pass_base = ptr - 8 * int(self.tile_first[tile])
        state = np.frombuffer((ctypes.c_double * self.size).from_address(self.pass_base), np.float64)
        p.compute(state[self.offsets], jac_ptr is not None)
        self.pass_jac_base = None
        if jac_ptr is not None:
            self.pass_jac_base = jac_ptr - 8 * p.R * int(p.block_position[p.j_offset[tile] // p.R])

    def params_in_place(self, tile, ptr):
        return ptr == self.pass_base + 8 * int(self.tile_first[tile])

    def jacobian_in_place(self, tile, jac_ptr):
        p = self.problem
        return jac_ptr == self.pass_jac_base + 8 * p.R * int(p.block_position[p.j_offset[tile] // p.R])

    def finish_first_pass(self):
        """Positions of the unknowns in Ceres's state and the Jacobian layout they imply: Ceres stores a
        residual block's Jacobian blocks as one run ordered by column, i.e. by the state position of their
        parameters (checked at every use, by the first and last block's addresses)."""
        p = self.problem
        self.first_pass_seconds = time.perf_counter() - self.first_pass_t0
        U = len(p.upix)
        addr = np.zeros(U, np.int64)
        for t, ptrs in self.layout.items():
            addr[p.tile_params[t][p.own_cols[t]]] = ptrs
        offsets = (addr - addr.min()) // 8
        if not addr.all() or len(np.unique(offsets)) != U or int(offsets.max()) + 1 != U:
            raise RuntimeError("Ceres's parameters are not one contiguous vector; the fine stage cannot "
                               "read its evaluation point")
        self.offsets, self.size = offsets, U
        block0 = p.j_offset[:-1] // p.R
        tile_of_block = np.repeat(np.arange(self.n_tiles), np.diff(p.j_offset) // p.R)
        param_of_block = np.concatenate(p.tile_params)
        order = np.lexsort((offsets[param_of_block], tile_of_block))  # blocks by tile, then Ceres's column
        position = np.empty(len(param_of_block), np.int64)
        position[order] = np.arange(len(param_of_block))
        self.tile_first = offsets[param_of_block[block0]]
        p.set_block_layout(position)
        self.layout_known = True
        self.first_pass = False
        self.layout = {}


def _make_tile_cost():
    import pyceres

    class TileCost(pyceres.CostFunction):
        """Residuals of one 4×4 tile; their values come from the pass's vectorised evaluation."""

        def __init__(self, state, tile, n_params, n_residuals):
            super().__init__()
            self.state, self.tile = state, tile
            p = state.problem
            self.R = p.R
            self.g0, self.g1 = int(p.j_offset[tile]) // p.R, int(p.j_offset[tile + 1]) // p.R
            self.set_num_residuals(n_residuals)
            self.set_parameter_block_sizes([1] * n_params)

        def Evaluate(self, parameters, residuals, jacobians):
            st, tile, R, g0, g1 = self.state, self.tile, self.R, self.g0, self.g1
            p = st.problem
            ptr = _address(parameters[0])
            jac_ptr = None if jacobians is None else _address(jacobians[0])
            with st.lock:  # Ceres may run tiles on several threads: each pass is evaluated once, first
                if st.started == 0:
                    st.start_pass(tile, ptr, jac_ptr)
                st.started += 1
            t0 = time.perf_counter()
            if st.first_pass:  # its Jacobian is written block by block below (no layout known yet)
                own = p.own_cols[tile]
                ptrs = np.fromiter((_address(parameters[k]) for k in own), np.int64, len(own))
                with st.lock:
                    st.layout[tile] = ptrs
                start = None
            elif not st.params_in_place(tile, ptr):
                st.error = "Ceres evaluated the fine stage's tiles out of the layout of its first pass"
                return False
            else:
                rank = p.block_position[g0:g1] - g0
                start = None if jac_ptr is None or not st.jacobian_in_place(tile, jac_ptr) else \
                    jac_ptr - 8 * R * int(rank[0])
            residuals[:] = p.R_all[tile]
            copies = None
            if jac_ptr is not None:
                if st.bulk_copies and start is not None and _address(jacobians[-1]) == start + 8 * R * int(rank[-1]):
                    # the tile's blocks are one contiguous run in Ceres's matrix, in Ceres's column order
                    ctypes.memmove(start, p.J_address + 8 * R * g0, 8 * R * (g1 - g0))
                    copies = "memmove"
                else:
                    copies = "blockwise"
                    for k, jac in enumerate(jacobians):
                        if jac is not None:
                            o = int(p.block_position[g0 + k]) * R
                            jac[:] = p.J_all[o:o + R]
            with st.lock:
                st.copy_seconds += time.perf_counter() - t0
                if copies == "memmove":
                    st.n_memmove += 1
                elif copies == "blockwise":
                    st.n_blockwise += 1
                st.done += 1
                if st.done == st.n_tiles:
                    st.started = st.done = 0
                    if st.first_pass:
                        st.finish_first_pass()
            return True

    return TileCost


_tile_cost_class = None


def _address(array):
    """Address of a (writable) numpy array's first element, as an int (faster than __array_interface__)."""
    return ctypes.addressof(ctypes.c_double.from_buffer(array))


def _tile_cost(state, tile, n_params, n_residuals):
    """A TileCost (the class is made on first use: pyceres is imported only when the stage runs)."""
    global _tile_cost_class
    if _tile_cost_class is None:
        _tile_cost_class = _make_tile_cost()
    return _tile_cost_class(state, tile, n_params, n_residuals)


def depth_discontinuities(depth, step_mm):
    """(h, w) bool: pixels next to a depth step > step_mm (an occluding edge such as the nose's side in a
    turned face, or the edge of the surface); shape from shading must not smooth across them."""
    out = np.zeros(depth.shape, bool)
    for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                 ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
        jump = np.abs(depth[a] - depth[b]) > step_mm
        out[a] |= jump
        out[b] |= jump
    return out


# --- the stage -----------------------------------------------------------------------------------------
def refined_region(model):
    """Name of the model region the stage refines: the front of the face (ICT's 'narrow_face': no
    ears, neck or scalp, which photos rarely show lit and unoccluded), else the face area."""
    return "narrow_face" if "narrow_face" in model.regions else "face"


def _skin_triangles(model, F):
    """(len(F),) bool: triangles of F in the refined region (face skin: no eyeballs, mouth interior)."""
    return model.region_mask(refined_region(model))[F].all(axis=1)


def _gray(image):
    return image @ np.array([0.299, 0.587, 0.114])


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


def _crop_scale(model, V, camera, image, labels, box, size, cfg, pixel_scale=1.0):
    """The crop at `size` pixels; pixel_scale: this scale's pixel size over the full crop's (for the
    occlusion-edge threshold)."""
    import cv2

    from .segment import FaceLabel

    F = model.faces_in("render") if "render" in model.regions else model.faces
    crop, A = crop_image(image, box, size)
    lab = cv2.warpAffine(np.asarray(labels, np.uint8), A[:2], (size, size), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cam = Camera(A @ camera.K, camera.R, camera.t, size, size)
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


def _image_gradients(image):
    gray = image @ np.array([0.299, 0.587, 0.114])
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, :-1] = gray[:, 1:] - gray[:, :-1]
    gy[:-1] = gray[1:] - gray[:-1]
    return gx, gy


def _surface_normals(depth, K, mask):
    """Normals of the depth inside `mask`, the outside filled with the mean depth (no edge artefacts)."""
    return depth_normals(np.where(mask, depth, depth[mask].mean() if mask.any() else 1.0), K)


def _shading(depth, K, sh, mask):
    n = _surface_normals(depth, K, mask)
    return n, (sh_basis(n.reshape(-1, 3)) @ sh).reshape(depth.shape + (3,))


def refine_depth(model, V, camera: Camera, image, labels, config: FineConfig = None):
    """Fine stage for one face. V: (N, 3) medium mesh (model frame, mm); camera: its fitted camera;
    image: (H, W, 3) uint8 photo; labels: (H, W) face parsing (fitter.segment.FaceLabel).
    Returns a FineResult. Raises InputError when the face is too small or shows no skin.

    The two depth phases are S2's two detail scales: the first solves on a coarser grid (larger
    wrinkles and the shape's own errors, cheaply), the second at full resolution from the upsampled
    result (fine detail), each with its own weights."""
    import cv2

    cfg = config or FineConfig()
    t_start = time.perf_counter()
    times = {}
    H, W = image.shape[:2]
    face_pts = camera.project(V[model.region(refined_region(model))])
    box = crop_box(face_pts, W, H, cfg.margin)
    size = int(min(cfg.crop_px, box[2]))
    if size < 32:
        raise InputError(f"the face is {box[2]} px across; the fine stage needs at least 32 px")
    full = _crop_scale(model, V, camera, image, labels, box, size, cfg)
    if full.skin.sum() < 200 or full.unknown.sum() < 200:
        raise InputError("too little visible skin for shape from shading (fewer than 200 pixels)")
    times["prepare_s"] = time.perf_counter() - t_start

    # lighting with the mean albedo (Eq. 5, ε = 0), then albedo (Eq. 6) and specular (Eq. 8)
    t0 = time.perf_counter()
    K = full.camera.K
    region = full.known & (full.labels > 0)
    n0 = _surface_normals(full.depth0, K, full.known)
    flat = region_average_albedo(full.image, np.ones_like(full.image), full.labels, region)
    sh = fit_lighting(n0, full.image, flat, full.skin)
    _, shading = _shading(full.depth0, K, sh, full.known)
    avg = region_average_albedo(full.image, np.clip(shading, 1e-3, None), full.labels, region)
    albedo = fit_albedo(full.image, np.clip(shading, 1e-3, None), avg, region, cfg.albedo_avg, cfg.albedo_rtv,
                        cfg.rtv_sigma, iterations=cfg.albedo_iterations)
    sh = fit_lighting(n0, full.image, albedo, full.skin)
    _, shading = _shading(full.depth0, K, sh, full.known)
    specular = fit_specular(full.image, albedo * shading, full.skin, cfg.specular_reg, cfg.specular_sigma)
    times["albedo_light_s"] = time.perf_counter() - t0

    solver = []
    gradient_term = any(lam[2] > 0 for lam in cfg.phases)
    t0 = time.perf_counter()
    problem = DepthProblem(full.depth0, full.known, full.unknown, full.skin, K, full.image,
                           _image_gradients(full.image), gradient_term=gradient_term)
    if cfg.phase1_scale < 1.0:
        # phase 1 on a coarser grid (its own problem), its depth change upsampled as phase 2's start
        n1 = max(int(round(size * cfg.phase1_scale)), 16)
        low = _crop_scale(model, V, camera, image, labels, box, n1, cfg, pixel_scale=size / n1)
        down = lambda x: cv2.resize(x, (n1, n1), interpolation=cv2.INTER_AREA)  # noqa: E731
        p1 = DepthProblem(low.depth0, low.known, low.unknown, low.skin, low.camera.K, low.image,
                          _image_gradients(low.image), gradient_term=gradient_term)
        p1.set_terms(sh, down(albedo), down(specular), cfg.phases[0])
    else:
        p1 = problem  # both phases solve the same problem with their own weights: one Ceres layout
        p1.set_terms(sh, albedo, specular, cfg.phases[0])
    p1.set_photo_weights(cfg.robust_scale, cfg.highlight_scale)
    solver.append(p1.solve(cfg.iterations[0], cfg.linear_solver))
    if p1 is not problem:
        delta = np.where(low.unknown, p1.z - low.depth0, 0.0).astype(np.float32)
        up = cv2.resize(delta, (size, size), interpolation=cv2.INTER_LINEAR)
        problem.z[:] = np.where(full.unknown, full.depth0 + up, full.depth0)
    times["depth_phase_1_s"] = time.perf_counter() - t0

    # albedo and specular again from the new normals (S2 alternates), then phase 2 at full resolution
    t0 = time.perf_counter()
    _, shading = _shading(problem.z, K, sh, full.known)
    albedo = fit_albedo(full.image, np.clip(shading, 1e-3, None), avg, region, cfg.albedo_avg, cfg.albedo_rtv,
                        cfg.rtv_sigma, iterations=1, start=albedo)
    specular = fit_specular(full.image, albedo * shading, full.skin, cfg.specular_reg, cfg.specular_sigma)
    times["albedo_update_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    problem.set_terms(sh, albedo, specular, cfg.phases[1])
    problem.set_photo_weights(cfg.robust_scale, cfg.highlight_scale)
    rms_before = problem.photometric_rms(full.depth0.ravel()[problem.upix])  # the medium depth, final model
    solver.append(problem.solve(cfg.iterations[1], cfg.linear_solver))
    rms_after = problem.photometric_rms()
    depth = np.where(full.known, problem.z, 0.0)
    times["depth_phase_2_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    V_new = displace_vertices(model, V, full.camera, full.depth0, depth, full.unknown)
    times["write_back_s"] = time.perf_counter() - t0
    return FineResult(V_new, full.camera, box, full.depth0, depth, full.unknown, problem.photo, sh, albedo, specular,
                      rms_before, rms_after, time.perf_counter() - t_start, times, solver)


def displace_vertices(model, V, camera: Camera, depth0, depth, region, feather_px=6.0):
    """Move each face-area vertex seen in `region` along its normal by the refined depth change under
    it (bilinear), feathered to zero over `feather_px` at the region's border. Returns (N, 3)."""
    import cv2

    from .render import depth_visible

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
    X = (d[..., None] * pixel_rays(result.camera.K, h, w))[ok]
    a, b, c, e = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    quad = (a >= 0) & (b >= 0) & (c >= 0) & (e >= 0)
    F = np.concatenate([np.stack([a[quad], c[quad], b[quad]], 1), np.stack([b[quad], c[quad], e[quad]], 1)])
    return X, F
