"""Basel Face Model 2017/2019 importer (`.h5`, statismo layout).

shape/model/{mean (3N,), pcaBasis (3N, K) orthonormal, pcaVariance (K,)},
shape/representer/{points (3, N), cells (3, M)}, and the same under expression/ and color/.
The basis is rescaled by sqrt(variance) so coefficients have a N(0, 1) prior.
"""
import numpy as np

from ...errors import InputError
from .common import build_model, colour_to_unit, single_file, to_vertices


def find_root(path):
    return single_file(path, (".h5", ".hdf5"), "BFM 2017/2019 .h5")


def _pca(f, group):
    mean = np.asarray(f[f"{group}/model/mean"], np.float64)
    basis = np.asarray(f[f"{group}/model/pcaBasis"], np.float64)
    var = np.asarray(f[f"{group}/model/pcaVariance"], np.float64).ravel()
    if basis.shape[0] != mean.size:  # some writers store (K, 3N)
        basis = basis.T
    return to_vertices(mean), to_vertices(basis * np.sqrt(np.maximum(var, 0))[None, :])


def load(root, spec, name="bfm2017"):
    import h5py

    path = find_root(root)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path} is not a readable HDF5 file ({e})") from None
    with f:
        if "shape/model/mean" not in f:
            raise InputError(f"{path} is not a BFM 2017/2019 model: no shape/model/mean")
        mean, basis = _pca(f, "shape")
        cells = np.asarray(f["shape/representer/cells"], np.int64)
        faces = cells.T if cells.shape[0] == 3 and cells.shape[1] != 3 else cells
        exp = None
        if "expression/model/mean" in f:
            exp_mean, exp = _pca(f, "expression")
            mean = mean + exp_mean  # statismo expression models carry their own (usually zero) mean
        color_mean = color_basis = None
        if "color/model/mean" in f:
            color_mean, color_basis = _pca(f, "color")
            color_mean = colour_to_unit(color_mean)
    return build_model(name, mean, faces, basis, exp, "pca", color_mean, color_basis,
                       metadata={"title": "Basel Face Model 2017/2019", "license": "BFM licence (non-commercial)",
                                 "has_expression": exp is not None})
