"""Importers, each tested on small files written here in the official layout (the real files are
licence-restricted). Every model must come out in mm with N(0, 1)-scaled bases."""
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from fitter.errors import InputError
from fitter.install import installer
from fitter.model import store

N, K, E = 60, 5, 4


def head_like(rng, n=N, extent_mm=160.0):
    """Random points spread like a head (extent ~160 mm)."""
    return rng.uniform(-extent_mm / 2, extent_mm / 2, (n, 3))


def triangles(rng, n=N, m=80):
    return np.stack([rng.choice(n, 3, replace=False) for _ in range(m)]).astype(np.int64)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_bfm2009_mat_with_trimmed_expression_basis(tmp_path, tmp_home, rng):
    import scipy.io

    mean_mm, faces = head_like(rng), triangles(rng)
    pc = np.linalg.qr(rng.standard_normal((3 * N, K)))[0]
    ev = np.array([5.0, 4.0, 3.0, 2.0, 1.0])  # standard deviations, mm
    um = 1000.0
    folder = tmp_path / "BFM"
    folder.mkdir()
    scipy.io.savemat(folder / "01_MorphableModel.mat", {
        "shapeMU": (mean_mm.ravel() * um)[:, None], "shapePC": pc * um, "shapeEV": ev[:, None],
        "tl": faces + 1, "texMU": np.full((3 * N, 1), 128.0), "texPC": pc, "texEV": ev[:, None]})
    n_exp = N - 10
    trim = np.sort(rng.choice(N, n_exp, replace=False))
    exp_pc = rng.standard_normal((E, n_exp, 3)).astype(np.float32)
    std = np.array([2.0, 1.5, 1.0, 0.5])
    with open(folder / "Exp_Pca.bin", "wb") as f:
        f.write(np.int32(E).tobytes())
        f.write(np.zeros(3 * n_exp, np.float32).tobytes())
        f.write(exp_pc.tobytes())
    np.savetxt(folder / "std_exp.txt", std)
    scipy.io.savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (trim + 1)[:, None]})
    installer.install("bfm", folder, "bfm2009", progress=False, build_embedding=False, log=lambda *a: None)
    m = store.load_model("bfm")
    np.testing.assert_allclose(m.mean, mean_mm, atol=1e-6)
    np.testing.assert_array_equal(m.faces, faces)
    np.testing.assert_allclose(m.identity_basis[1].ravel(), pc[:, 1] * ev[1], rtol=1e-5, atol=1e-5)
    assert m.n_expression == E and m.expression_kind == "pca"
    np.testing.assert_allclose(m.expression_basis[2][trim], exp_pc[2] * std[2] * 1e-3, rtol=1e-5, atol=1e-7)
    untouched = np.setdiff1d(np.arange(N), trim)
    assert np.all(m.expression_basis[:, untouched] == 0)
    np.testing.assert_allclose(m.color_mean, 128 / 255.0)
    info = store.model_info("bfm")
    assert info["units"] == "mm" and info["n_vertices"] == N and not info["checksums_verified"]


def test_bfm2009_expression_without_index_is_an_error(tmp_path, tmp_home, rng):
    import scipy.io

    folder = tmp_path / "BFM"
    folder.mkdir()
    scipy.io.savemat(folder / "01_MorphableModel.mat", {
        "shapeMU": head_like(rng).ravel()[:, None] * 1000, "shapePC": rng.standard_normal((3 * N, K)),
        "shapeEV": np.ones((K, 1)), "tl": triangles(rng) + 1})
    with open(folder / "Exp_Pca.bin", "wb") as f:
        f.write(np.int32(2).tobytes() + np.zeros(3 * 10 * 3, np.float32).tobytes())
    with pytest.raises(InputError, match="BFM_exp_idx.mat"):
        installer.install("bfm", folder, "bfm2009", progress=False, build_embedding=False, log=lambda *a: None)
    assert "bfm" not in store.installed()


def test_bfm2017_h5(tmp_path, tmp_home, rng):
    import h5py

    mean, faces = head_like(rng), triangles(rng)
    basis = np.linalg.qr(rng.standard_normal((3 * N, K)))[0]
    var = np.array([16.0, 9.0, 4.0, 1.0, 0.25])
    ebasis = np.linalg.qr(rng.standard_normal((3 * N, E)))[0]
    evar = np.array([4.0, 1.0, 1.0, 0.5])
    path = tmp_path / "model2017-1_bfm_nomouth.h5"
    with h5py.File(path, "w") as f:
        f["shape/model/mean"] = mean.ravel().astype(np.float32)
        f["shape/model/pcaBasis"] = basis.astype(np.float32)
        f["shape/model/pcaVariance"] = var.astype(np.float32)
        f["shape/representer/points"] = mean.T.astype(np.float32)
        f["shape/representer/cells"] = faces.T.astype(np.int32)
        f["expression/model/mean"] = np.zeros(3 * N, np.float32)
        f["expression/model/pcaBasis"] = ebasis.astype(np.float32)
        f["expression/model/pcaVariance"] = evar.astype(np.float32)
    installer.install("bfm17", path, "bfm2017", progress=False, build_embedding=False, log=lambda *a: None)
    m = store.load_model("bfm17")
    np.testing.assert_allclose(m.mean, mean, atol=1e-4)
    np.testing.assert_array_equal(m.faces, faces)
    np.testing.assert_allclose(m.identity_basis[0].ravel(), basis[:, 0] * 4.0, atol=1e-5)
    np.testing.assert_allclose(m.expression_basis[1].ravel(), ebasis[:, 1] * 1.0, atol=1e-5)


def _flame_arrays(rng):
    v = head_like(rng) / 1000.0  # metres
    f = triangles(rng)
    sd = rng.standard_normal((N, 3, 300 + E)) * 1e-3
    return v, f, sd


def test_flame_chumpy_pickle(tmp_path, tmp_home, rng, monkeypatch):
    """A pickle that references chumpy classes, written without chumpy installed."""
    v, f, sd = _flame_arrays(rng)
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

        def __getstate__(self):
            return {"x": self.x}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_mod)
    path = tmp_path / "generic_model.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"v_template": Ch(v), "f": f.astype(np.uint32), "shapedirs": Ch(sd),
                     "posedirs": Ch(np.zeros((N, 3, 36)))}, fh, protocol=2)
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    installer.install("flame", path, "flame", progress=False, build_embedding=False, log=lambda *a: None)
    m = store.load_model("flame")
    np.testing.assert_allclose(m.mean, v * 1000, atol=1e-6)
    assert m.n_identity == 300 and m.n_expression == E
    np.testing.assert_allclose(m.identity_basis[299], sd[:, :, 299] * 1000, rtol=1e-5)
    np.testing.assert_allclose(m.expression_basis[0], sd[:, :, 300] * 1000, rtol=1e-5)


def test_flame_npz_and_malicious_pickle(tmp_path, tmp_home, rng):
    v, f, sd = _flame_arrays(rng)
    np.savez(tmp_path / "flame.npz", v_template=v, f=f, shapedirs=sd)
    installer.install("flame", tmp_path / "flame.npz", "flame", progress=False, build_embedding=False,
                  log=lambda *a: None)
    assert store.load_model("flame").n_vertices == N

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"v_template": Evil()}, fh)
    with pytest.raises(InputError, match="not a readable FLAME pickle"):
        installer.install("evil", tmp_path / "evil.pkl", "flame", progress=False, build_embedding=False,
                      log=lambda *a: None)


def _eigen(a):
    a = np.atleast_2d(np.asarray(a, np.float32))
    if a.shape[0] == 1:
        a = a.T
    return struct.pack("<ii", *a.shape) + np.asfortranarray(a).tobytes(order="F")


def _tris(t):
    return struct.pack("<Q", len(t)) + np.asarray(t, "<i4").tobytes()


def _pca(mean, basis, ev, tris):
    return _eigen(mean) + _eigen(basis) + _eigen(ev) + _tris(tris)


def _string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


@pytest.mark.parametrize("expression", ["pca", "blendshapes"])
def test_sfm_eos_bin(tmp_path, tmp_home, rng, expression):
    mean, faces = head_like(rng), triangles(rng)
    basis = np.linalg.qr(rng.standard_normal((3 * N, K)))[0]
    ev = np.array([9.0, 4.0, 1.0, 1.0, 0.25])
    data = struct.pack("<I", 4) + _pca(mean.ravel(), basis, ev, faces)
    data += _pca(np.full(3 * N, 0.5), np.zeros((3 * N, 1)), np.ones(1), faces)  # colour model
    deltas = rng.standard_normal((E, 3 * N)).astype(np.float32)
    if expression == "pca":
        data += struct.pack("<B", 0) + struct.pack("<i", 0) + _pca(np.zeros(3 * N), deltas.T, np.ones(E), faces)
    else:
        data += struct.pack("<B", 0) + struct.pack("<i", 1) + struct.pack("<Q", E)
        for j in range(E):
            data += _string(f"shape{j}") + _eigen(deltas[j])
    data += struct.pack("<B", 0) + struct.pack("<Q", 1) + _string("eye.right.outer_corner") + struct.pack("<i", 7)
    uv = rng.uniform(0, 1, (N, 2))
    data += struct.pack("<Q", N) + uv.astype("<f8").tobytes() + _tris(faces)
    path = tmp_path / "sfm_shape_3448.bin"
    path.write_bytes(data)
    installer.install("sfm", path, "sfm", progress=False, build_embedding=False, log=lambda *a: None)
    m = store.load_model("sfm")
    np.testing.assert_allclose(m.mean, mean, atol=1e-4)
    np.testing.assert_allclose(m.identity_basis[0].ravel(), basis[:, 0] * 3.0, atol=1e-5)
    np.testing.assert_allclose(m.expression_basis.reshape(E, -1), deltas, atol=1e-5)
    assert m.expression_kind == ("blendshape" if expression == "blendshapes" else "pca")
    assert m.metadata["eos_landmarks"] == {"eye.right.outer_corner": 7}
    np.testing.assert_allclose(m.uv, uv)
    # a truncated file is a clear error
    path.write_bytes(data[:100])
    with pytest.raises(InputError, match="ends early"):
        installer.install("sfm2", path, "sfm", progress=False, build_embedding=False, log=lambda *a: None)


def test_unit_inference():
    from fitter.model.morphable import infer_unit_scale

    X = np.random.default_rng(0).uniform(-0.08, 0.08, (50, 3))
    assert infer_unit_scale(X) == 1000.0
    assert infer_unit_scale(X * 100) == 10.0
    assert infer_unit_scale(X * 1000) == 1.0
    assert infer_unit_scale(X * 1e6) == 0.001
    with pytest.raises(InputError):
        infer_unit_scale(X * 1e12)
