"""Helpers shared by the importers: single-file roots, unit conversion, building the model."""
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..morphable import MorphableModel, infer_unit_scale


def single_file(root, suffixes, what):
    """The model file: `root` itself, or the one file with a matching suffix inside folder `root`."""
    root = Path(root)
    if root.is_file():
        if not root.name.lower().endswith(suffixes):
            raise InputError(f"{root} is not a {what} file (expected {', '.join(suffixes)})")
        return root
    hits = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
    if not hits:
        raise InputError(f"no {what} file ({', '.join(suffixes)}) in {root}")
    return hits[0]


def to_vertices(flat, n=None):
    """(3N,) xyzxyz... or (3N, K) column basis -> (N, 3) or (K, N, 3)."""
    a = np.asarray(flat, dtype=np.float64)
    if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1):
        return a.reshape(-1, 3)
    return a.T.reshape(a.shape[1], -1, 3)


def build_model(name, mean, faces, id_basis, exp_basis=None, exp_kind="pca", color_mean=None, color_basis=None,
                units=None, metadata=None, uv=None, uv_faces=None):
    """Convert to mm and assemble a MorphableModel; `units` None means infer from the mean's extent."""
    scale = infer_unit_scale(mean) if units is None else units
    faces = np.asarray(faces, dtype=np.int64)
    if faces.min() < 0 or faces.max() >= len(mean):
        raise InputError(f"model '{name}': triangle indices outside its {len(mean)} vertices")
    exp = np.zeros((0, len(mean), 3)) if exp_basis is None else exp_basis
    meta = dict(metadata or {})
    meta["unit_scale_to_mm"] = float(scale)
    return MorphableModel(
        name=name, mean=np.asarray(mean, np.float64) * scale, faces=faces.astype(np.int32),
        identity_basis=(np.asarray(id_basis) * scale).astype(np.float32),
        expression_basis=(np.asarray(exp) * scale).astype(np.float32), expression_kind=exp_kind,
        expression_names=[f"exp{j:03d}" for j in range(len(exp))],
        color_mean=None if color_mean is None else np.asarray(color_mean, np.float64),
        color_basis=None if color_basis is None else np.asarray(color_basis, np.float32),
        uv=uv, uv_faces=uv_faces, regions={"face": np.arange(len(mean), dtype=np.int64)}, metadata=meta)


def colour_to_unit(c):
    """Colour arrays in [0, 255] are scaled to [0, 1]."""
    c = np.asarray(c, np.float64)
    return c / 255.0 if np.nanmax(np.abs(c)) > 2.0 else c
