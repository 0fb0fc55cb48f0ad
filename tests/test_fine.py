"""Fine stage: normals from depth, the Ceres depth solve (Jacobians, layout, convergence on a sphere)."""
import numpy as np
import pytest

from fitter.geometry.camera import Camera
from fitter.photo import fine
from fitter.photo.fine import ceres_tiles
from fitter.photo.texture import sh_basis

pytest.importorskip("pyceres")


def _sphere_scene(size=96, radius=50.0, distance=250.0, focal=220.0):
    """Analytic depth and normals of a sphere seen by a pinhole camera, and its SH-lit image."""
    K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1.0]])
    r = Camera(K, width=size, height=size).image_rays()
    rn = r / np.linalg.norm(r, axis=2, keepdims=True)
    C = np.array([0.0, 0.0, distance])
    b = (rn * C).sum(2)
    disc = b * b - (C @ C - radius ** 2)
    hit = disc > 0
    t = b - np.sqrt(np.maximum(disc, 0))
    X = rn * t[..., None]
    depth = np.where(hit, X[..., 2], 0.0)
    normals = (X - C) / radius
    L = np.zeros((9, 3))
    L[0] = [1.0, 0.9, 0.8]
    L[1], L[2], L[3] = -0.25, -0.5, 0.3
    albedo = np.full((size, size, 3), 0.6)
    image = albedo * (sh_basis(normals.reshape(-1, 3)) @ L).reshape(size, size, 3)
    return K, depth, normals, hit, L, albedo, image


def _masks(hit, border=2):
    import cv2

    k = np.ones((3, 3), np.uint8)
    known = cv2.erode(hit.astype(np.uint8), k, iterations=3).astype(bool)
    unknown = cv2.erode(known.astype(np.uint8), k, iterations=border).astype(bool)
    return known, unknown


def _angles(n, m):
    return np.degrees(np.arccos(np.clip((n * m).sum(-1), -1, 1)))


def test_normals_of_a_tilted_plane_are_exact():
    K = np.array([[300.0, 0, 31.5], [0, 300.0, 31.5], [0, 0, 1]])
    n_true = np.array([0.3, -0.2, -1.0])
    n_true /= np.linalg.norm(n_true)
    # plane n·X = d  ->  depth along each ray: z = d / (n·r)
    r = Camera(K).image_rays(64, 64)
    depth = -500.0 / (r @ n_true)
    n = fine.depth_normals(depth, Camera(K))
    assert np.abs(n[:-1, :-1] - n_true).max() < 1e-9


def test_depth_problem_jacobian_matches_finite_differences():
    K, depth, _, hit, L, albedo, image = _sphere_scene(size=48)
    known, unknown = _masks(hit)
    rng = np.random.default_rng(0)
    d0 = np.where(known, depth + rng.normal(0, 0.3, depth.shape), 0.0)
    gx, gy = rng.normal(0, 0.01, (2,) + depth.shape)
    P = ceres_tiles.DepthProblem(d0, known, unknown, known, Camera(K), image, (gx, gy), gradient_term=True)
    P.set_terms(L, albedo, np.full(depth.shape, 0.02), (0.01, 0.05, 0.3, 0.7))
    z = d0.ravel()[P.upix].copy()
    P.compute(z, True)
    J = P.J_all.reshape(-1, P.R)
    block0 = P.j_offset[:-1] // P.R
    eps = 1e-5
    for u in rng.choice(len(z), 12, replace=False):
        zp, zm = z.copy(), z.copy()
        zp[u] += eps
        zm[u] -= eps
        P.compute(zp, False)
        Rp = P.R_all.copy()
        P.compute(zm, False)
        numeric = (Rp - P.R_all) / (2 * eps)
        analytic = np.zeros_like(numeric)
        for t in range(P.n_tiles):
            k = np.flatnonzero(P.tile_params[t] == u)
            if len(k):
                analytic[t] = J[P.block_position[block0[t] + k[0]]]
        assert np.abs(numeric - analytic).max() < 1e-5 * max(1.0, np.abs(analytic).max())


def test_depth_solve_on_a_lit_sphere_converges_to_the_sphere():
    K, depth, normals, hit, L, albedo, image = _sphere_scene()
    known, unknown = _masks(hit)
    u, v = np.meshgrid(np.arange(depth.shape[1]), np.arange(depth.shape[0]))
    bumps = 1.5 * np.sin(u / 5.0) * np.sin(v / 6.0)   # a wrong start: ±1.5 mm ripples
    d0 = np.where(known, depth + bumps, 0.0)
    zero = np.zeros(depth.shape)
    P = ceres_tiles.DepthProblem(d0, known, unknown, known, Camera(K), image, (zero, zero))
    P.set_terms(L, albedo, zero, (0.0001, 0.001, 0.0, 0.0))
    summary = P.solve(15, "SPARSE_NORMAL_CHOLESKY")
    m = unknown
    err0 = _angles(fine.depth_normals(d0, Camera(K))[m], normals[m]).mean()
    err1 = _angles(fine.depth_normals(P.z, Camera(K))[m], normals[m]).mean()
    floor = _angles(fine.depth_normals(np.where(known, depth, 0), Camera(K))[m], normals[m]).mean()
    # measured: cost −91 %, normal error 8.0° → 4.0° (forward-difference floor 0.9°), depth 0.60 → 0.30 mm;
    # what is left is shape from shading's blind direction (ripples across the light)
    assert summary["final_cost"] < 0.15 * summary["initial_cost"]
    assert err1 < 0.55 * err0, (err0, err1, floor)
    assert np.abs(P.z - depth)[m].mean() < 0.6 * np.abs(d0 - depth)[m].mean()


def test_bulk_and_blockwise_jacobian_copies_give_the_same_solve():
    """The fine stage writes each tile's Jacobian with one memory copy once it knows Ceres's layout; the
    result must be identical to writing block by block."""
    K, depth, _, hit, L, albedo, image = _sphere_scene(size=64)
    known, unknown = _masks(hit)
    d0 = np.where(known, depth + 0.5 * np.cos(np.arange(64) / 4.0)[None, :], 0.0)
    zero = np.zeros(depth.shape)
    results = []
    for bulk in (True, False):
        P = ceres_tiles.DepthProblem(d0, known, unknown, known, Camera(K), image, (zero, zero))
        P.set_terms(L, albedo, zero, (0.001, 0.01, 0.0, 0.0))
        if not bulk:
            P.pass_states["SPARSE_NORMAL_CHOLESKY"] = state = ceres_tiles._PassState(P)
            state.bulk_copies = False
        s = P.solve(4, "SPARSE_NORMAL_CHOLESKY")
        results.append((P.z.copy(), s))
    # the first pass (layout unknown) is block by block in both; every later Jacobian pass is one copy per
    # tile in the first solve and block by block in the second
    assert results[0][1]["memmove"] >= 2 * results[0][1]["tiles"] and results[1][1]["memmove"] == 0
    assert np.array_equal(results[0][0], results[1][0])


def test_photo_weights_down_weight_outliers_and_highlights():
    """Cauchy weights fall on pixels the shading cannot explain and stay near 1 elsewhere; the
    highlight factor is 1/√(1 + (β/s)²) of the specular layer β."""
    K, depth, _, hit, L, albedo, image = _sphere_scene(size=64)
    known, unknown = _masks(hit)
    rng = np.random.default_rng(3)
    noisy = image + rng.normal(0, 0.01, image.shape)
    bad = np.zeros(hit.shape, bool)
    bad[28:34, 20:26] = True                       # e.g. a glasses frame: far brighter than any shading
    noisy[bad] += 0.5
    spec = np.zeros(hit.shape)
    spec[36:44, 36:44] = 0.05
    P = ceres_tiles.DepthProblem(np.where(known, depth, 0.0), known, unknown, known, Camera(K), noisy,
                          (np.zeros(hit.shape), np.zeros(hit.shape)))
    P.set_terms(L, albedo, spec, (0.001, 0.005, 0.0, 0.0))
    on_bad = bad.ravel()[P.pix] & P.ph.astype(bool)
    w = P.set_photo_weights(robust_scale=2.0)
    assert on_bad.sum() > 20 and w[on_bad].max() < 0.15
    assert np.median(w[~on_bad]) > 0.8
    w = P.set_photo_weights(robust_scale=0.0, highlight_scale=0.01)
    assert np.allclose(w, 1.0 / np.sqrt(1.0 + (spec.ravel()[P.pix] / 0.01) ** 2))
    assert w.min() < 0.2 and np.median(w) == 1.0


def test_subdivision_keeps_vertices_and_splits_every_triangle():
    from fitter.geometry.mesh import subdivide_midpoint

    V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    F = np.array([[0, 1, 2], [1, 3, 2]])
    V2, F2, vals = subdivide_midpoint(V, F, np.arange(4.0))
    assert len(F2) == 8 and len(V2) == 4 + 5  # 5 distinct edges
    assert np.array_equal(V2[:4], V)
    area = lambda V, F: 0.5 * np.linalg.norm(np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), axis=1).sum()  # noqa: E731
    assert area(V2, F2) == pytest.approx(area(V, F))
    # every new vertex is the midpoint of an edge, and carries the mean of its endpoints' values
    edges = [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    for (a, b) in edges:
        i = np.flatnonzero(np.all(np.isclose(V2, (V[a] + V[b]) / 2), axis=1))
        assert len(i) == 1 and vals[i[0]] == pytest.approx((a + b) / 2)


def test_fine_stage_on_a_detailed_synthetic_face(ict_model, ict_prepared):
    """End to end on a render of a face with known wrinkle-scale detail and known SH light: the refined
    depth has smaller normal error than the medium one, the photometric error drops, the mesh moves only
    inside the refined region, smoothly (no spikes) and not at all at its border."""
    from fitter.bench import synthetic
    from fitter.geometry.camera import look_at_face
    from fitter.photo.pipeline import fit_photo

    rng = np.random.default_rng(11)
    _, V, F, A, V_smooth = synthetic.detailed_face(ict_prepared, rng)
    cam = look_at_face(V[ict_model.region("face")].mean(0), 10, 5, 600, 1000, 640, 640)
    img, _ = synthetic.sh_render(V, F, cam, A, synthetic.random_sh(rng))
    r = fit_photo("synthetic.png", ict_prepared, ("coarse", "medium", "fine"), focal=1000, image=img,
                  texture_size=128)[0]
    f = r.fine
    assert f is not None, r.times.get("fine_error")
    e = synthetic.fine_case_errors(f, V, F, cam.R, cam.t, V_smooth)
    # measured: 12.4° -> 11.7° (mean over 24 renders in BENCHMARKS.md: −6 %)
    assert e["fine_normal_deg"] < e["medium_normal_deg"] - 0.3, e
    assert e["fine_depth_mm"] < e["medium_depth_mm"] + 0.05, e
    assert f.photometric_rms_after < 0.85 * f.photometric_rms_before
    # the change carries the wrinkles (high-pass against high-pass; measured 0.34); adding the true detail
    # to the medium shape leaves that shape's own error (measured 11.5° -> 9.9°, smooth truth 5.9°)
    assert e["detail_correlation"] > 0.25, e
    assert e["smooth_truth_normal_deg"] + 2.0 < e["perfect_detail_normal_deg"] < e["medium_normal_deg"] - 0.5, e
    moved = np.linalg.norm(r.vertices - r.medium.vertices, axis=1)
    region = ict_model.region_mask(fine.refined_region(ict_model))
    assert moved[~region].max() == 0.0
    assert moved.max() < 3.0 and np.percentile(moved[region], 99) < 1.5
    from fitter.geometry.mesh import boundary_vertices

    border = boundary_vertices(ict_model.faces_in(fine.refined_region(ict_model)), ict_model.n_vertices)
    assert moved[border].max() < 0.05


def test_fit_writes_the_fine_outputs(ict_model, tmp_path):
    """`facefit fit` (default stages) writes depth_refined.png (0.1 mm units, the crop camera in
    params.json), normals.png and detail.obj consistent with each other and with the mesh."""
    import json

    import cv2
    from click.testing import CliRunner

    from cli.main import cli
    from conftest import PHOTOS, need
    from fitter.geometry.mesh import read_obj

    photo = need(PHOTOS / "whitehouse_biden.jpg", "photo")
    r = CliRunner().invoke(cli, ["fit", str(photo), "-o", str(tmp_path), "--json", "--texture-size", "256"])
    assert r.exit_code == 0, r.output
    d = tmp_path / "whitehouse_biden"
    params = json.loads((d / "params.json").read_text())
    fs = params["stages"]["fine"]
    assert fs["seconds"] > 0 and fs["photometric_rms_after"] < fs["photometric_rms_before"]
    depth = cv2.imread(str(d / "depth_refined.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (min(256, fs["crop_box"][2]),) * 2
    png = cv2.imread(str(d / "normals.png"))[..., ::-1]
    normals = png.astype(float) / 255 * 2 - 1
    on = depth > 0
    valid = png.any(axis=2)
    assert on.sum() > 5000 and not (valid & ~on).any() and valid.sum() > 0.95 * on.sum()
    n = normals[valid]
    assert np.all(np.abs(np.linalg.norm(n, axis=1) - 1) < 0.02) and np.median(n[:, 2]) < -0.7
    detail = read_obj(d / "detail.obj")
    assert len(detail.V) == on.sum()
    # the detail mesh is the depth map back-projected with the crop camera: its z is the PNG's depth
    K = np.array(fs["crop_K"])
    uvw = detail.V @ K.T
    u, v = np.rint(uvw[:, 0] / uvw[:, 2]).astype(int), np.rint(uvw[:, 1] / uvw[:, 2]).astype(int)
    assert np.abs(detail.V[:, 2] - 0.1 * depth[v, u]).max() < 0.06
    # and it lies on the refined mesh: the mesh's face vertices are at the same depths (±2 mm)
    mesh = read_obj(d / "mesh.obj")
    face = ict_model.region(fine.refined_region(ict_model))
    p = mesh.V[face] @ K.T
    pu, pv = np.rint(p[:, 0] / p[:, 2]).astype(int), np.rint(p[:, 1] / p[:, 2]).astype(int)
    inside = (pu >= 0) & (pv >= 0) & (pu < depth.shape[1]) & (pv < depth.shape[0])
    zz = 0.1 * depth[pv[inside], pu[inside]].astype(float)
    seen = zz > 0
    assert np.median(np.abs(zz[seen] - mesh.V[face][inside][seen, 2])) < 2.0
    # a rerun without the fine stage into the same folder leaves no stale detail next to the new mesh
    r = CliRunner().invoke(cli, ["fit", str(photo), "-o", str(tmp_path), "--stages", "coarse,medium",
                                 "--texture-size", "64"])
    assert r.exit_code == 0, r.output
    assert not any((d / n).exists() for n in ("depth_refined.png", "normals.png", "detail.obj"))
    assert "fine" not in json.loads((d / "params.json").read_text())["stages"]
