"""Linear face model: mean shape + identity basis + expression basis (+ optional colour PCA).

shape(α, β) = mean + Σ_k α_k identity_basis[k] + Σ_j β_j expression_basis[j]   (N, 3) mm.
Identity coefficients have a N(0, 1) prior (the basis is scaled by the standard deviations).
Expressions are either 'blendshape' (β_j in [0, 1], ICT/ARKit) or 'pca' (β ~ N(0, 1), BFM/FLAME/SFM).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..io import save_npz_atomic, write_json_atomic

MODEL_ARRAYS = "model.npz"
MODEL_META = "model.json"


@dataclass
class MorphableModel:
    name: str
    mean: np.ndarray                     # (N, 3) float64 mm
    faces: np.ndarray                    # (M, 3) int32
    identity_basis: np.ndarray           # (K, N, 3) float32 mm per unit coefficient
    expression_basis: np.ndarray         # (E, N, 3) float32 mm per unit coefficient
    expression_kind: str = "pca"         # 'blendshape' (bounded [0, 1]) or 'pca' (N(0, 1) prior)
    expression_names: list = field(default_factory=list)
    uv: Optional[np.ndarray] = None      # (T, 2) texture coordinates
    uv_faces: Optional[np.ndarray] = None  # (M, 3) int32 indices into uv
    color_mean: Optional[np.ndarray] = None   # (N, 3) albedo in [0, 1]
    color_basis: Optional[np.ndarray] = None  # (C, N, 3) per unit coefficient
    regions: dict = field(default_factory=dict)  # name -> int64 vertex indices
    metadata: dict = field(default_factory=dict)

    @property
    def n_vertices(self):
        return len(self.mean)

    @property
    def n_identity(self):
        return len(self.identity_basis)

    @property
    def n_expression(self):
        return len(self.expression_basis)

    def shape(self, identity=None, expression=None):
        """Vertices (N, 3) float64 mm for identity / expression coefficients (missing = zeros)."""
        V = self.mean.copy()
        if identity is not None and len(identity):
            a = np.asarray(identity, float)
            V += np.tensordot(a, self.identity_basis[: len(a)], axes=1)
        if expression is not None and len(expression):
            b = np.asarray(expression, float)
            V += np.tensordot(b, self.expression_basis[: len(b)], axes=1)
        return V

    def region(self, name):
        if name not in self.regions:
            raise InputError(f"model '{self.name}' has no region '{name}' (has: {', '.join(sorted(self.regions))})")
        return self.regions[name]

    def region_mask(self, *names):
        m = np.zeros(self.n_vertices, bool)
        for n in names:
            m[self.region(n)] = True
        return m

    def faces_in(self, *region_names):
        """Triangles whose three vertices lie in the union of the given regions."""
        return self.faces[self.region_mask(*region_names)[self.faces].all(axis=1)]

    def front_region(self):
        """Name of the region of the front of the face: 'narrow_face' when the model has it (no ears, neck
        or scalp, which photos rarely show lit and unoccluded or constrain), else 'face'."""
        return "narrow_face" if "narrow_face" in self.regions else "face"

    def render_faces(self):
        """Triangles the renderer draws: the 'render' region when the model has one (it leaves out
        hidden inner parts), else all. `PreparedModel.render_faces` keeps them."""
        return self.faces_in("render") if "render" in self.regions else self.faces

    def random_coefficients(self, rng, identity_scale=1.0, expression_scale=0.0):
        """Identity ~ N(0, s²); expression ~ N(0, s²) for PCA, U(0, s) for blendshapes."""
        a = rng.standard_normal(self.n_identity) * identity_scale
        if self.expression_kind == "blendshape":
            b = rng.uniform(0, 1, self.n_expression) * expression_scale
        else:
            b = rng.standard_normal(self.n_expression) * expression_scale
        return a, b

    # --- storage -------------------------------------------------------------------------
    def save(self, folder):
        """Write model.npz (arrays) and model.json (metadata) into `folder` (atomically per file)."""
        folder = Path(folder)
        arrays = dict(mean=self.mean.astype(np.float64), faces=self.faces.astype(np.int32),
                      identity_basis=self.identity_basis.astype(np.float32),
                      expression_basis=self.expression_basis.astype(np.float32))
        for k in ("uv", "uv_faces", "color_mean", "color_basis"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        for k, idx in self.regions.items():
            arrays["region__" + k] = np.asarray(idx, np.int64)
        save_npz_atomic(folder / MODEL_ARRAYS, **arrays)
        meta = dict(self.metadata)
        meta.update(name=self.name, units="mm", expression_kind=self.expression_kind,
                    expression_names=list(self.expression_names), n_vertices=int(self.n_vertices),
                    n_triangles=int(len(self.faces)), n_identity=int(self.n_identity),
                    n_expression=int(self.n_expression),
                    n_color=int(0 if self.color_basis is None else len(self.color_basis)),
                    regions={k: int(len(v)) for k, v in self.regions.items()})
        write_json_atomic(folder / MODEL_META, meta)

    @staticmethod
    def load(folder):
        folder = Path(folder)
        try:
            meta = json.loads((folder / MODEL_META).read_text())
            z = np.load(folder / MODEL_ARRAYS)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the model in {folder}: {e}; reinstall it with 'facefit model install'") from None
        regions = {k[len("region__"):]: z[k] for k in z.files if k.startswith("region__")}
        get = lambda k: z[k] if k in z.files else None  # noqa: E731
        return MorphableModel(
            name=meta["name"], mean=z["mean"], faces=z["faces"], identity_basis=z["identity_basis"],
            expression_basis=z["expression_basis"], expression_kind=meta["expression_kind"],
            expression_names=meta.get("expression_names", []), uv=get("uv"), uv_faces=get("uv_faces"),
            color_mean=get("color_mean"), color_basis=get("color_basis"), regions=regions, metadata=meta)


def infer_unit_scale(V, hint="convert the file to mm"):
    """Factor that converts vertices to mm, judged from the model's extent (a head is ~100-400 mm).
    hint: what the error message tells the user to do (e.g. the command's units option).

    Returns 1000 for metres, 10 for cm, 1 for mm, 0.001 for µm.
    """
    extent = float(np.max(np.ptp(np.asarray(V, float), axis=0)))
    for scale in (1.0, 10.0, 1000.0, 0.001):
        if 50.0 <= extent * scale <= 1000.0:
            return scale
    raise InputError(f"cannot tell the units from the extent {extent:g} (a head is 100-400 mm); {hint}")


UNIT_SCALES = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 0.001}
