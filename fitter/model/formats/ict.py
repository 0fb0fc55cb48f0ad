"""ICT-FaceKit importer (ICT Face Model Light, official `FaceXModel/` folder, units cm).

Identity mode k = identityK.obj - generic_neutral_mesh.obj (weights ~ N(0, 1)); expression mode
j = <expression>.obj - neutral (weights in [0, 1]) for the 53 names listed in vertex_indices.json.
Quads are split into two triangles (a, b, c), (a, c, d).
"""
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...geometry.mesh import read_obj, read_obj_vertices
from ..morphable import MorphableModel

NEUTRAL = "generic_neutral_mesh.obj"
INDEX_FILE = "vertex_indices.json"
N_IDENTITY = 100


def find_root(folder):
    """The folder that holds FaceXModel/ (searched up to three levels down)."""
    folder = Path(folder)
    for depth in range(4):
        hits = sorted(folder.glob("/".join(["*"] * depth + ["FaceXModel", NEUTRAL])))
        if hits:
            return hits[0].parent.parent
    raise InputError(f"{folder} holds no ICT-FaceKit files (FaceXModel/{NEUTRAL} not found)")


def load_ict(folder, spec, progress=None):
    """Read the official ICT files under `folder` into a MorphableModel in mm."""
    root = find_root(folder)
    fx = root / "FaceXModel"
    scale = {"cm": 10.0, "mm": 1.0, "m": 1000.0}[spec.get("source_units", "cm")]
    try:
        index = json.loads((fx / INDEX_FILE).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {fx / INDEX_FILE}: {e}") from None
    names = list(index["expressions"])
    neutral = read_obj(fx / NEUTRAL)
    files = [fx / f"identity{k:03d}.obj" for k in range(N_IDENTITY)] + [fx / f"{n}.obj" for n in names]
    for f in files:
        if not f.exists():
            raise InputError(f"the ICT folder {fx} lacks {f.name}")

    def read(f):
        v = read_obj_vertices(f)
        if progress:
            progress(1)
        return v

    with ThreadPoolExecutor(max_workers=2) as pool:
        meshes = list(pool.map(read, files))
    n = len(neutral.V)
    for f, v in zip(files, meshes):
        if v.shape != (n, 3):
            raise InputError(f"{f.name} has {len(v)} vertices, the neutral mesh has {n}")
    deltas = (np.stack(meshes) - neutral.V[None]) * scale
    regions = {k: np.arange(a, b, dtype=np.int64) for k, (a, b) in spec["regions"].items()}
    regions["outer_skin"] = np.concatenate([regions[p] for p in spec["outer_skin_parts"]])
    regions["render"] = np.concatenate([regions[p] for p in spec["render_parts"]])
    meta = {
        "title": spec.get("title", "ICT-FaceKit"),
        "license": spec.get("license"),
        "homepage": spec.get("homepage"),
        "source_commit": spec.get("commit"),
        "source_units": spec.get("source_units", "cm"),
        "reference_landmarks_68": [int(i) for i in index["idx_to_landmark_verts"]],
    }
    return MorphableModel(
        name=spec["name"], mean=neutral.V * scale, faces=neutral.F,
        identity_basis=deltas[:N_IDENTITY].astype(np.float32),
        expression_basis=deltas[N_IDENTITY:].astype(np.float32),
        expression_kind="blendshape", expression_names=names, uv=neutral.UV, uv_faces=neutral.F_uv,
        regions=regions, metadata=meta)


def load(root, spec, name=None):
    return load_ict(root, spec)


def license_file(root):
    lic = find_root(root) / "LICENSE"
    return lic if lic.is_file() else None
