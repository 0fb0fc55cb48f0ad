"""Basel Face Model 2009 importer: `01_MorphableModel.mat` (+ optional expression basis).

The .mat holds shapeMU (3N, 1), shapePC (3N, K), shapeEV (K, 1) standard deviations, tl (M, 3)
1-based triangles, texMU/texPC/texEV (colour 0..255); units µm. An expression basis in the layout of
Deep3DFaceRecon's BFM folder is used when present beside it: `Exp_Pca.bin` (int32 K, then float32
mean (3n) and basis (K, 3n)), `std_exp.txt` (K standard deviations) and `BFM_exp_idx.mat`
(`trimIndex`, 1-based: BFM vertex of each of the n expression vertices, when n < N).
"""
from pathlib import Path

import numpy as np

from ...errors import InputError
from .common import build_model, colour_to_unit, single_file, to_vertices

MAT_NAME = "01_MorphableModel.mat"


def find_root(path):
    return single_file(path, (".mat",), "BFM 2009 .mat") if Path(path).is_file() else _find_mat(path)


def _find_mat(folder):
    hits = sorted(Path(folder).rglob(MAT_NAME)) or sorted(Path(folder).rglob("*.mat"))
    if not hits:
        raise InputError(f"no {MAT_NAME} in {folder}")
    return hits[0]


def _loadmat(path):
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        import h5py

        with h5py.File(path, "r") as f:
            return {k: np.asarray(f[k]).T for k in f.keys()}
    except (ValueError, OSError) as e:
        raise InputError(f"{path} is not a readable .mat file ({e})") from None


def read_expression(folder, n_vertices):
    """(K, N, 3) expression basis scaled by its standard deviations (BFM units), or None."""
    folder = Path(folder)
    binf = folder / "Exp_Pca.bin"
    if not binf.is_file():
        return None
    raw = binf.read_bytes()
    k = int(np.frombuffer(raw[:4], np.int32)[0])
    floats = np.frombuffer(raw[4:], np.float32)
    if k <= 0 or floats.size % (3 * (k + 1)):
        raise InputError(f"{binf}: size does not match an expression basis of {k} modes")
    n = floats.size // (3 * (k + 1))
    pc = floats[3 * n:].reshape(k, n, 3).astype(np.float64)
    stdf = folder / "std_exp.txt"
    if stdf.is_file():
        std = np.loadtxt(stdf).ravel()
        if std.size != k:
            raise InputError(f"{stdf} has {std.size} values, Exp_Pca.bin has {k} modes")
        pc *= std[:, None, None]
    if n == n_vertices:
        return pc
    idxf = folder / "BFM_exp_idx.mat"
    if not idxf.is_file():
        raise InputError(f"Exp_Pca.bin covers {n} vertices, the model has {n_vertices}: put BFM_exp_idx.mat "
                         f"(trimIndex) beside it")
    idx = np.asarray(_loadmat(idxf)["trimIndex"]).ravel().astype(np.int64) - 1
    if idx.size != n or idx.max() >= n_vertices:
        raise InputError(f"{idxf}: trimIndex does not map {n} expression vertices into {n_vertices}")
    full = np.zeros((k, n_vertices, 3))
    full[:, idx] = pc
    return full


def load(root, spec, name="bfm2009"):
    path = find_root(root)
    m = _loadmat(path)
    for key in ("shapeMU", "shapePC", "shapeEV", "tl"):
        if key not in m:
            raise InputError(f"{path} is not a BFM 2009 model: no '{key}'")
    mean = to_vertices(m["shapeMU"])
    ev = np.asarray(m["shapeEV"], np.float64).ravel()
    basis = to_vertices(np.asarray(m["shapePC"], np.float64) * ev[None, :])
    faces = np.asarray(m["tl"], np.int64) - 1
    exp = read_expression(path.parent, len(mean))
    color_mean = color_basis = None
    if "texMU" in m and "texPC" in m and "texEV" in m:
        tev = np.asarray(m["texEV"], np.float64).ravel()
        color_mean = colour_to_unit(to_vertices(m["texMU"]))
        scale = 255.0 if np.nanmax(np.abs(np.asarray(m["texMU"]))) > 2.0 else 1.0
        color_basis = to_vertices(np.asarray(m["texPC"], np.float64) * tev[None, :]) / scale
    return build_model(name, mean, faces, basis, exp, "pca", color_mean, color_basis,
                       metadata={"title": "Basel Face Model 2009", "license": "BFM licence (non-commercial)",
                                 "has_expression": exp is not None})
