"""The installed ICT model: sizes, units, regions, and its linear shape function."""
import numpy as np

from fitter.geometry.mesh import read_obj, write_obj


def test_ict_sizes_units_and_regions(ict_model):
    m = ict_model
    assert (m.n_vertices, m.n_identity, m.n_expression) == (26719, 100, 53)
    assert m.expression_kind == "blendshape" and m.metadata["units"] == "mm"
    assert len(m.region("face")) == 9409 and m.region("face")[-1] == 9408
    face = m.mean[m.region("face")]
    width = np.ptp(face[:, 0])
    assert 150 < width < 250  # a face area in mm, not cm
    ref = m.metadata["reference_landmarks_68"]
    iod = np.linalg.norm(m.mean[ref[36]] - m.mean[ref[45]])
    assert 80 < iod < 110  # outer eye corners of an adult, mm
    # the identity basis is scaled to unit variance: the first mode moves the face by millimetres
    rms = np.sqrt((m.identity_basis[:, m.region("face")] ** 2).sum(2).mean(1))
    assert rms[0] > 1.0 and rms[0] < 20.0  # mm per unit coefficient
    assert np.all(np.diff(rms[:10]) < 0)  # PCA order: decreasing variance


def test_shape_is_linear(ict_model):
    m = ict_model
    rng = np.random.default_rng(0)
    a, b = m.random_coefficients(rng, 1.0, 1.0)
    V = m.shape(a, b)
    expected = m.mean + np.tensordot(a, m.identity_basis, 1) + np.tensordot(b, m.expression_basis, 1)
    np.testing.assert_allclose(V, expected, atol=1e-6)
    np.testing.assert_allclose(m.shape(), m.mean)


def test_obj_roundtrip_with_quads(tmp_path):
    p = tmp_path / "q.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nf 1/1 2/2 3/3 4/4\n")
    m = read_obj(p)
    np.testing.assert_array_equal(m.F, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(m.F_uv, m.F)
    write_obj(tmp_path / "o.obj", m.V, m.F, m.UV, m.F_uv)
    m2 = read_obj(tmp_path / "o.obj")
    np.testing.assert_allclose(m2.V, m.V)
    np.testing.assert_array_equal(m2.F, m.F)
    np.testing.assert_allclose(m2.UV, m.UV)
