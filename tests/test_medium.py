"""Medium stage: the Laplacian, the deformation system and its cached CHOLMOD factor."""
import numpy as np
import pytest
import scipy.sparse.linalg as sla

from conftest import grid_mesh, icosphere
from fitter.geometry.camera import look_at_face
from fitter.geometry.mesh import adjacency, boundary_vertices, uniform_laplacian
from fitter.geometry.render import get_renderer
from fitter.photo.medium import LaplacianSystem, deform_to_landmarks


def test_laplacian_of_flat_grid_known_values():
    h = 0.5
    V, F = grid_mesh(9, 8 * h, 3.0)  # spacing h
    L = uniform_laplacian(F, len(V))
    inner = ~boundary_vertices(F, len(V))
    assert np.abs((L @ V)[inner]).max() < 1e-12  # a plane is its own neighbours' mean
    # z = x²: the six neighbours of an inner vertex have x offsets (±h, 0, 0, +h, -h) → L z = -(2/3) h²
    z = V[:, 0] ** 2
    np.testing.assert_allclose((L @ z)[inner], -(2 / 3) * h * h, rtol=1e-12)


def test_laplacian_of_sphere_known_values():
    r = 2.0
    V, F = icosphere(0, radius=r)  # icosahedron: each vertex has 5 neighbours at cos θ = 1/√5
    LV = uniform_laplacian(F, len(V)) @ V
    np.testing.assert_allclose(LV, (1 - 1 / np.sqrt(5)) * V, atol=1e-12)
    V, F = icosphere(3, radius=r)  # valence 5 and 6: uniform weights are not tangent-free, but
    L = uniform_laplacian(F, len(V))
    assert ((L @ V * V).sum(1) > 0).all()  # every Laplacian vector points outwards (convex surface)
    np.testing.assert_allclose(L @ np.ones(len(V)), 0.0, atol=1e-12)  # rows sum to zero
    # the 12 original vertices keep valence 5, every vertex made by subdivision has 6
    valence = np.diff(L.indptr) - 1
    assert set(valence) == {5, 6} and (valence == 5).sum() == 12


def _grid_system(n=21):
    V, F = grid_mesh(n, float(n - 1), 0.0)
    anchor = np.where(boundary_vertices(F, len(V)), 10.0, 0.0) + 1e-8
    return V, F, LaplacianSystem(F, len(V), anchor)


def test_one_constraint_displacement_decays_away_from_it():
    V, F, system = _grid_system()
    centre = int(np.argmin(np.linalg.norm(V[:, :2], axis=1)))
    D, _ = system.solve([centre], [1.0], [[0.0, 0.0, 1.0]])
    assert np.abs(D[:, :2]).max() < 1e-12  # only z was asked to move
    dz = D[:, 2]
    assert 0.1 < dz[centre] < 1.0 and dz[centre] == dz.max()
    ring = np.rint(np.abs(V[:, :2] - V[centre, :2]).max(axis=1)).astype(int)  # Chebyshev ring index
    means = np.array([dz[ring == k].mean() for k in range(11)])
    assert (np.diff(means) < 0).all()  # decays ring by ring
    assert means[-1] < 0.02 * dz[centre]  # the anchored boundary stays put


def test_cached_factor_gives_the_fresh_solution():
    V, F, system = _grid_system()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(V), 12, replace=False)
    w = rng.uniform(0.1, 1.0, 12)
    T1, T2 = rng.normal(size=(12, 3)), rng.normal(size=(12, 3))
    D1, cached1 = system.solve(idx, w, T1)
    D2, cached2 = system.solve(idx, w, T2)  # same pattern, new targets: back-substitution only
    assert not cached1 and cached2 and system.cache.factorisations == 1
    A = system.matrix(idx, w).tocsc()
    rhs = np.zeros((len(V), 3))
    np.add.at(rhs, idx, w[:, None] * T2)
    np.testing.assert_allclose(D2, sla.spsolve(A, rhs), rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def coarse_view(ict_prepared):
    m = ict_prepared.model
    emb = ict_prepared.embedding
    rng = np.random.default_rng(5)
    alpha = np.zeros(m.n_identity)
    alpha[:20] = rng.standard_normal(20)
    V = m.shape(alpha)
    cam = look_at_face(V[m.region("face")].mean(0), 20, 5, 600, 1000, 640, 640)
    depth = get_renderer().render(V, ict_prepared.render_faces, cam).depth
    return ict_prepared, emb, V, cam, depth


def test_no_moved_constraint_no_motion(coarse_view):
    p, emb, V, cam, depth = coarse_view
    m = p.model
    q = cam.project(emb.points(V, m.faces, 20))
    res = deform_to_landmarks(p, V, cam, q, depth)
    assert res.active.sum() > 20
    assert np.abs(res.vertices - V).max() < 1e-9


def test_contour_residual_moves_the_contour_and_nothing_far(coarse_view):
    p, emb, V, cam, depth = coarse_view
    m = p.model
    d = p.laplacian_deformer
    q = cam.project(emb.points(V, m.faces, 20))
    detected = q.copy()
    centre = q.mean(0)
    out = (q[d.contour_ids] - centre) / np.linalg.norm(q[d.contour_ids] - centre, axis=1, keepdims=True)
    detected[d.contour_ids] += 4.0 * out  # the face outline is 4 px wider than the fit
    res = deform_to_landmarks(p, V, cam, detected, depth)
    err_before = np.linalg.norm(q - detected, axis=1)[d.contour_ids][res.active[d.contour_ids]]
    err_after = np.linalg.norm(res.fitted_2d - detected, axis=1)[d.contour_ids][res.active[d.contour_ids]]
    assert err_after.mean() < 0.8 * err_before.mean()
    moved = np.linalg.norm(res.vertices - V, axis=1)
    assert moved.max() < 4.0  # mm; 4 px at 600 mm and f = 1000 px is 2.4 mm
    # separate parts (eyeballs, teeth) keep the coarse placement
    for region in ("eyeball_left", "teeth"):
        if region in m.regions:
            assert moved[m.region(region)].max() == 0.0
    # inner landmarks (held) hardly move
    inner = np.setdiff1d(np.arange(468), d.contour_ids)
    assert np.median(np.linalg.norm(res.fitted_2d - q, axis=1)[inner]) < 0.5


def test_adjacency_is_symmetric_for_the_laplacian():
    V, F = grid_mesh(5, 4.0, 0.0)
    A = adjacency(F, len(V))
    assert (A != A.T).nnz == 0



def test_face_crop_camera_maps_projections_by_its_matrix(coarse_view):
    from fitter.model.detector_bias import face_crop_camera

    p, emb, V, cam, depth = coarse_view
    m = p.model
    q = cam.project(emb.points(V, m.faces, 20))
    crop, A = face_crop_camera(cam, q, 320)
    X = V[m.region("face")][::50]
    np.testing.assert_allclose(crop.project(X), (np.c_[cam.project(X), np.ones(len(X))] @ A.T)[:, :2], atol=1e-9)
    inside = crop.project(emb.points(V, m.faces, 20))
    assert inside.min() > 0.2 * 320 * 0.25 and inside.max() < 320 - 0.2 * 320 * 0.25  # margin on every side


def test_detection_on_the_fits_own_render_cancels_the_detector_bias(coarse_view):
    """A photo that is a render of the coarse mesh itself (the detector-bias render's light and albedo)
    gives the detector-consistent residual ≈ 0, so `deform_redetected` leaves the mesh where it is,
    while the plain residual (detected − fitted) is the detector's own bias there and moves it."""
    from fitter.detection import landmarks as lmk
    from fitter.model import detector_bias as db
    from fitter.photo.medium import deform_redetected

    p, emb, V, cam, depth = coarse_view
    m = p.model
    q = cam.project(emb.points(V, m.faces, 20))
    photo, A = db.render_face_crop(p, V, cam, q)                     # the "photo": 320² face crop
    P = lmk.detect_landmarks(photo)[0].points
    P = (np.c_[P, np.ones(len(P))] @ np.linalg.inv(A).T)[:, :2]      # in the fit's image pixels
    Q = db.detect_on_fit(p, V, cam, q)
    assert np.median(np.linalg.norm(Q - P, axis=1)) < 0.05             # same image, same detector
    assert np.median(np.linalg.norm(P - q, axis=1)) > 0.5              # the bias the plain residual sees
    res = deform_redetected(p, V, cam, P, depth)
    assert res.residual == "on_fit" and res.redetect_seconds > 0
    assert np.linalg.norm(res.vertices - V, axis=1).max() < 0.05
    plain = deform_to_landmarks(p, V, cam, P, depth)
    assert plain.residual == "fitted" and np.linalg.norm(plain.vertices - V, axis=1).max() > 0.2


def test_redetected_medium_holds_the_coarse_shape_beyond_its_yaw(ict_prepared):
    from fitter.photo.medium import REDETECT_MAX_YAW, deform_redetected

    m = ict_prepared.model
    emb = ict_prepared.embedding
    V = m.mean
    cam = look_at_face(V[m.region("face")].mean(0), REDETECT_MAX_YAW + 15, 0, 600, 1000, 640, 640)
    depth = get_renderer().render(V, ict_prepared.render_faces, cam).depth
    q = cam.project(emb.points(V, m.faces, REDETECT_MAX_YAW + 15))
    detected = q + np.random.default_rng(0).normal(0, 3.0, q.shape)
    res = deform_redetected(ict_prepared, V, cam, detected, depth)
    assert res.residual == "none" and np.abs(res.vertices - V).max() == 0.0
