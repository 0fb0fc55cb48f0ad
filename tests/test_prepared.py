"""The prepared model: lazy, built once, shared read-only (also across threads); and the small shared
helpers (render faces, interocular distance, five points, square box)."""
import threading

import numpy as np
import pytest

from fitter.detection import landmarks as lmk
from fitter import prepared as prepared_module
from fitter.geometry.camera import Camera, look_at_face, square_box
from fitter.photo.coarse import fit_landmarks
from fitter.prepared import PreparedModel


def test_building_one_is_free_and_each_part_is_built_once(ict_model):
    p = PreparedModel(ict_model)
    built = ("embedding", "landmark_basis", "laplacian_deformer", "render_faces", "painted_parts", "painted_albedo")
    assert not any(k in p.__dict__ for k in built)  # nothing is computed until a stage asks
    assert p.landmark_basis is p.landmark_basis and p.embedding is p.embedding
    assert p.mirror_pairs("face") is p.mirror_pairs("face")
    assert p.nicp_topology(1.0) is p.nicp_topology(1.0) and p.nicp_topology(2.0) is not p.nicp_topology(1.0)
    np.testing.assert_array_equal(p.render_faces, ict_model.faces_in("render"))


def test_shared_arrays_are_read_only(ict_prepared):
    for a in (ict_prepared.painted_albedo, ict_prepared.painted_parts, ict_prepared.render_faces,
              *ict_prepared.mirror_pairs("face")):
        with pytest.raises(ValueError):
            a[0] = 0


def test_threads_share_one_build(ict_model, monkeypatch):
    """Eight threads asking at once for the Laplacian system get the same object, built once."""
    builds = []
    real = prepared_module.LaplacianDeformer

    def counting(p):
        builds.append(1)
        return real(p)

    monkeypatch.setattr(prepared_module, "LaplacianDeformer", counting)
    p = PreparedModel(ict_model)
    got = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        got[i] = p.laplacian_deformer

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and all(g is got[0] for g in got)


def test_a_second_prepared_model_gives_the_same_fit(ict_model, ict_prepared):
    m = ict_model
    cam = look_at_face(m.mean[m.region("face")].mean(0), 15, 5, 600, 1000, 640, 640)
    u = cam.project(ict_prepared.embedding.points(m.mean, m.faces, 15))
    a = fit_landmarks(ict_prepared, [u], [Camera.for_image(640, 640, 1000.0)])
    b = fit_landmarks(PreparedModel(m), [u], [Camera.for_image(640, 640, 1000.0)])
    np.testing.assert_array_equal(a.identity, b.identity)
    np.testing.assert_array_equal(a.images[0].camera.R, b.images[0].camera.R)


def test_a_model_without_embedding_is_refused_by_the_landmark_stages(ict_model):
    from fitter.errors import InputError

    with pytest.raises(InputError, match="no landmark embedding"):
        PreparedModel(ict_model, embedding=None).landmark_basis


def test_landmark_helpers():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(478, 2)) * 50
    p68 = lmk.to_68(P)
    assert lmk.outer_interocular(P) == lmk.outer_interocular(p68) == pytest.approx(np.linalg.norm(p68[36] - p68[45]))
    five = lmk.five_points(p68)
    np.testing.assert_allclose(five[0], p68[36:42].mean(0))
    np.testing.assert_allclose(five[2], p68[30])
    np.testing.assert_allclose(five[4], p68[54])


def test_square_box_contains_the_points_with_its_margin():
    pts = np.array([[10.0, 20.0], [50.0, 30.0], [30.0, 90.0]])
    x0, y0, side = square_box(pts, 0.25)
    assert side == pytest.approx(70.0 * 1.5) and (x0 + side / 2, y0 + side / 2) == pytest.approx((30.0, 55.0))
    xi, yi, si = square_box(pts, 0.25, whole_pixels=True)
    assert all(isinstance(v, int) for v in (xi, yi, si)) and si == 105
    assert xi <= pts[:, 0].min() and yi <= pts[:, 1].min() and xi + si >= pts[:, 0].max() and yi + si >= pts[:, 1].max()
