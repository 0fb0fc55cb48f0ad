"""Fine stage geometry on a depth map (mm, camera frame of the crop's camera): normals
by forward differences, the SH basis's gradient with respect to the normal, occlusion edges."""
import numpy as np

from ..texture import SH_C


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


def depth_normals(depth, camera):
    """(h, w, 3) unit normals of a depth map (mm) by forward differences (`forward_normals`); the last
    row and column use depths repeated and rays extrapolated past the border."""
    r = camera.image_rays(*depth.shape)
    zr = np.concatenate([depth[:, 1:], depth[:, -1:]], axis=1)
    zd = np.concatenate([depth[1:], depth[-1:]], axis=0)
    rr = np.concatenate([r[:, 1:], r[:, -1:] + (r[:, -1:] - r[:, -2:-1])], axis=1)
    rd = np.concatenate([r[1:], r[-1:] + (r[-1:] - r[-2:-1])], axis=0)
    return forward_normals(depth, zr, zd, r, rr, rd)[0]


def sh_gradient(n):
    """(N, 9, 3) derivative of each SH basis function (fitter.photo.texture.sh_basis) w.r.t. the normal."""
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


def surface_normals(depth, camera, mask):
    """Normals of the depth inside `mask`, the outside filled with the mean depth (no edge artefacts)."""
    return depth_normals(np.where(mask, depth, depth[mask].mean() if mask.any() else 1.0), camera)
