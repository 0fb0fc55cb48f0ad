"""Renderer checked against geometry computed independently (analytic depth, back-projection)."""
import numpy as np
import pytest

from conftest import grid_mesh, icosphere
from fitter.geometry.camera import Camera, intrinsics
from fitter.geometry.render import RenderBackendError, Renderer, render, vertex_visibility


def pixel_rays(K, W, H):
    """(H, W, 3) camera-frame ray directions with z = 1 through each pixel centre (OpenCV)."""
    u, v = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    Kinv = np.linalg.inv(K)
    return np.einsum("ij,hwj->hwi", Kinv, np.stack([u, v, np.ones_like(u)], -1))


def test_tilted_plane_depth_matches_ray_intersection():
    W, H = 96, 64
    cam = Camera(intrinsics(120.0, W, H), width=W, height=H)
    V, F = grid_mesh(11, 2000.0, 0.0)
    # plane through (0, 0, 600) with normal n: z = 600 + 0.3 x - 0.2 y
    V[:, 2] = 600 + 0.3 * V[:, 0] - 0.2 * V[:, 1]
    res = render(V, F, cam)
    assert res.mask.all()
    d = pixel_rays(cam.K, W, H)
    n = np.array([-0.3, 0.2, 1.0])
    z_true = 600.0 / (d @ n)  # n·(z d) = 600
    np.testing.assert_allclose(res.depth, z_true, rtol=2e-6, atol=2e-3)


def test_sphere_depth_within_tessellation_bound():
    W = H = 128
    R, c = 80.0, np.array([10.0, -5.0, 500.0])
    V, F = icosphere(5, R, c)
    cam = Camera(intrinsics(200.0, W, H), width=W, height=H)
    res = render(V, F, cam)
    d = pixel_rays(cam.K, W, H)
    # ray-sphere: |z d - c|^2 = R^2, nearest root
    a = (d * d).sum(-1)
    b = -2 * d @ c
    disc = b * b - 4 * a * (c @ c - R * R)
    hit = disc > 0
    z_true = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0)
    # max distance between a flat triangle and the sphere: R - sqrt(R^2 - rc^2), rc its circumradius
    A, B, C = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    a_, b_, c_ = np.linalg.norm(B - C, axis=1), np.linalg.norm(C - A, axis=1), np.linalg.norm(A - B, axis=1)
    area = 0.5 * np.linalg.norm(np.cross(B - A, C - A), axis=1)
    rc = a_ * b_ * c_ / (4 * area)
    sag = float(np.max(R - np.sqrt(R * R - rc * rc)))
    both = hit & res.mask
    # a depth error along a ray is the sag over the cosine of the incidence angle; stay away from the rim
    P = z_true[..., None] * d
    cosang = np.abs(np.einsum("hwk,hwk->hw", (P - c) / R, d / np.linalg.norm(d, axis=-1, keepdims=True)))
    inner = both & (cosang > 0.5)
    assert inner.sum() > 2000
    err = np.abs(res.depth - z_true)[inner]
    assert err.max() <= sag / 0.5 + 1e-3, (err.max(), sag)
    # coverage: the silhouette agrees with the analytic disc up to the rim pixels
    assert (hit != res.mask).sum() < 0.03 * hit.sum()


def test_index_map_rebuilds_back_projected_points():
    W = H = 128
    V, F = icosphere(4, 70.0, (0, 0, 400.0))
    cam = Camera(intrinsics(180.0, W, H), width=W, height=H)
    res = render(V, F, cam)
    P = res.surface_points(V, F)[res.mask]
    Q = (res.depth[..., None] * pixel_rays(cam.K, W, H))[res.mask]
    err = np.linalg.norm(P - Q, axis=1)
    # float32 depth and barycentrics: micrometres inside, worst at grazing silhouette pixels
    assert np.percentile(err, 99) < 0.01 and err.max() < 0.1, (np.percentile(err, 99), err.max())
    b = res.barycentric[res.mask]
    # pixels on a triangle edge may interpolate a hair outside the triangle (float32 rasteriser)
    assert np.all(b > -2e-3) and np.allclose(b.sum(1), 1, atol=5e-4)


def test_pixel_centre_convention():
    """A square spanning pixel-grid x in [-0.5, 4.5] covers exactly columns 0..4."""
    W, H = 16, 8
    K = intrinsics(100.0, W, H)
    z = 300.0
    u0, u1, v0, v1 = -0.5 + 1e-3, 4.5 - 1e-3, -0.5 + 1e-3, H - 0.5 - 1e-3
    corners = np.array([[u0, v0, 1], [u1, v0, 1], [u0, v1, 1], [u1, v1, 1]])
    V = (np.linalg.inv(K) @ corners.T).T * z
    F = np.array([[0, 2, 1], [1, 2, 3]], np.int32)
    res = render(V, F, Camera(K, width=W, height=H))
    cols = res.mask.any(axis=0)
    assert cols[:5].all() and not cols[5:].any()
    assert res.mask[:, :5].all()


def test_vertex_visibility_on_self_occluding_mesh():
    W = H = 100
    cam = Camera(intrinsics(150.0, W, H), width=W, height=H)
    back, Fb = grid_mesh(21, 400.0, 600.0)
    front, Ff = grid_mesh(5, 100.0, 400.0)
    V = np.vstack([back, front])
    F = np.vstack([Fb, Ff + len(back)])
    res = render(V, F, cam)
    vis = vertex_visibility(V, F, cam, res)
    # ground truth: a back vertex is hidden when its ray to the camera crosses the front square
    ray_at_front = back[:, :2] * (400.0 / 600.0)
    hidden = (np.abs(ray_at_front) < 50.0).all(axis=1)
    uv = cam.project(back)
    in_image = ((uv > 1) & (uv < W - 2)).all(axis=1)
    clear = np.abs(np.abs(ray_at_front).max(axis=1) - 50.0) > 3.0  # away from the occluder's edge
    sel = in_image & clear
    assert sel.sum() > 30 and hidden[sel].any()
    np.testing.assert_array_equal(vis[: len(back)][sel], ~hidden[sel])
    assert vis[len(back):].all()


def test_missing_egl_gives_actionable_error(monkeypatch):
    import moderngl

    def fail(*a, **k):
        raise Exception("cannot open libEGL.so.1")

    monkeypatch.setattr(moderngl, "create_standalone_context", fail)
    with pytest.raises(RenderBackendError, match="apt-get install libegl1"):
        Renderer()


def test_a_uv_texture_is_looked_up_at_every_rendered_pixel():
    """fitter.photo.texture.texture_at_pixels on a square facing the camera, textured with a ramp (red = u,
    green = 1 - v along the texture's rows): each covered pixel gets the texture at its interpolated UV."""
    from fitter.geometry.camera import Camera
    from fitter.geometry.render import get_renderer
    from fitter.photo.texture import texture_at_pixels

    V = np.array([[-50.0, -50, 500], [50, -50, 500], [50, 50, 500], [-50, 50, 500]])
    F = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0.1, 0.9], [0.9, 0.9], [0.9, 0.1], [0.1, 0.1]])  # image-down y is texture-down v
    T = 256
    ramp = np.zeros((T, T, 3), np.float32)
    ramp[..., 0] = ((np.arange(T) + 0.5) / T)[None, :]
    ramp[..., 1] = ((np.arange(T) + 0.5) / T)[:, None]
    cam = Camera(np.array([[500.0, 0, 64], [0, 500, 64], [0, 0, 1]]), np.eye(3), np.zeros(3), 128, 128)
    r = get_renderer().render(V, F, cam)
    out = texture_at_pixels(r, uv, F, ramp)
    m = r.mask
    assert m.sum() > 5000 and not out[~m].any()
    # the square spans pixels 14..114; u runs 0.1 -> 0.9 left to right, 1 - v 0.1 -> 0.9 top to bottom
    ys, xs = np.nonzero(m)
    expect_u = 0.1 + 0.8 * (xs - 14) / 100.0
    expect_row = 0.1 + 0.8 * (ys - 14) / 100.0
    np.testing.assert_allclose(out[ys, xs, 0], expect_u, atol=0.02)
    np.testing.assert_allclose(out[ys, xs, 1], expect_row, atol=0.02)
