"""FLAME importer (`generic_model.pkl`, chumpy-pickled, or the same arrays in an `.npz`).

Uses v_template (N, 3), f (M, 3) and shapedirs (N, 3, 300 + E): the first 300 columns are identity,
the rest expression; both already scaled so coefficients are N(0, 1). Units metres. FLAME's
articulated parts (jaw, neck, eye joints and pose correctives) are not imported: the linear model
only, in the template's pose.
"""
import pickle

import numpy as np

from ...errors import InputError
from .common import build_model, single_file

N_SHAPE = 300


class _Stub:
    """Stands in for chumpy/scipy objects while unpickling; keeps their state."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state

    def __call__(self, *args, **kwargs):  # some pickles call reconstructors
        return _Stub(*args)


_SAFE = {  # what FLAME pickles need besides chumpy: numpy arrays, scipy sparse matrices, plain objects
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("scipy.sparse.csc", "csc_matrix"), ("scipy.sparse._csc", "csc_matrix"),
    ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"), ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object"), ("_codecs", "encode"),
}


class _Unpickler(pickle.Unpickler):
    """Loads only arrays and chumpy placeholders: a model file cannot run code."""

    def find_class(self, module, name):
        if module.startswith("chumpy"):
            return _Stub
        if (module, name) in _SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a model file")


def _array(x):
    if isinstance(x, _Stub):
        state = getattr(x, "_state", {})
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
        if isinstance(state, dict) and "a" in state:
            return np.asarray(state["a"])
        raise InputError("cannot read a chumpy array in the FLAME file")
    if hasattr(x, "toarray"):
        return x.toarray()
    return np.asarray(x)


def find_root(path):
    return single_file(path, (".pkl", ".npz"), "FLAME .pkl/.npz")


def read_arrays(path):
    if path.name.lower().endswith(".npz"):
        z = np.load(path, allow_pickle=False)
        return {k: z[k] for k in z.files}
    try:
        with open(path, "rb") as fh:
            d = _Unpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise InputError(f"{path} is not a readable FLAME pickle ({e})") from None
    if not isinstance(d, dict):
        raise InputError(f"{path} does not hold a FLAME model dictionary")
    return {k: _array(v) for k, v in d.items() if k in ("v_template", "f", "shapedirs")}


def load(root, spec, name="flame"):
    path = find_root(root)
    d = read_arrays(path)
    for key in ("v_template", "f", "shapedirs"):
        if key not in d:
            raise InputError(f"{path} is not a FLAME model: no '{key}'")
    sd = np.asarray(d["shapedirs"], np.float64)
    if sd.ndim != 3 or sd.shape[1] != 3:
        raise InputError(f"{path}: shapedirs has shape {sd.shape}, expected (N, 3, K)")
    n_shape = min(N_SHAPE, sd.shape[2])
    basis = np.moveaxis(sd[:, :, :n_shape], 2, 0)
    exp = np.moveaxis(sd[:, :, n_shape:], 2, 0)
    return build_model(name, d["v_template"], d["f"], basis, exp, "pca", units=1000.0,
                       metadata={"title": "FLAME", "license": "FLAME licence (non-commercial)",
                                 "note": "linear model only: no joints or pose correctives"})
