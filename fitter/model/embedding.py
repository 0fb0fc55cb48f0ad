"""Landmark embedding: where each of MediaPipe's 478 landmarks lies on the model surface (runtime part).

The table is derived by the project when a model is installed (`fitter.install.embedding_build`: renders of
the painted model, the detector run on them, hits pooled on the mean shape) and stored beside the
model as landmarks.npz. Here: the table itself, `LandmarkEmbedding`, and loading it. Face-contour
landmarks are silhouette points that move with the view: they have one embedding per yaw bin, and
`points(..., yaw)` blends the two nearest bins linearly (still linear in the vertices).
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..io import save_npz_atomic
from .morphable import MorphableModel

EMBEDDING_FILE = "landmarks.npz"


@dataclass
class LandmarkEmbedding:
    """Surface location of each of the 478 MediaPipe landmarks on a model's topology."""

    triangles: np.ndarray            # (478,) int64 triangle index into model.faces
    barycentric: np.ndarray          # (478, 3)
    spread_mm: np.ndarray            # (478,) RMS distance of the pooled hits to the result (mean shape)
    weights: np.ndarray              # (478,) consistency weight in (0, 1]
    contour_ids: np.ndarray          # (C,) MediaPipe indices with a yaw-dependent embedding
    contour_yaws: np.ndarray         # (Y,) degrees, increasing
    contour_triangles: np.ndarray    # (Y, C)
    contour_barycentric: np.ndarray  # (Y, C, 3)
    report: dict = field(default_factory=dict)

    def vertex_weights(self, faces, n_vertices, yaw_deg=0.0):
        """Sparse (478, N) matrix W with landmarks = W @ V, for the given view yaw (degrees)."""
        tri = self.triangles.copy()
        bary = self.barycentric.copy()
        rows = [np.repeat(np.arange(478), 3)]
        cols = [faces[tri].ravel()]
        vals = [bary.ravel()]
        if len(self.contour_ids):
            (i0, i1), w = self._yaw_bins(yaw_deg)
            keep = np.ones(478, bool)
            keep[self.contour_ids] = False
            vals[0] = (bary * keep[:, None]).ravel()
            for i, s in ((i0, 1.0 - w), (i1, w)):
                if s == 0:
                    continue
                rows.append(np.repeat(self.contour_ids, 3))
                cols.append(faces[self.contour_triangles[i]].ravel())
                vals.append(s * self.contour_barycentric[i].ravel())
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(478, n_vertices))

    def _yaw_bins(self, yaw):
        ys = self.contour_yaws
        yaw = float(np.clip(yaw, ys[0], ys[-1]))
        i1 = int(np.clip(np.searchsorted(ys, yaw), 1, len(ys) - 1)) if len(ys) > 1 else 0
        i0 = max(i1 - 1, 0)
        w = 0.0 if i0 == i1 else (yaw - ys[i0]) / (ys[i1] - ys[i0])
        return (i0, i1), float(w)

    def points(self, V, faces, yaw_deg=0.0):
        """(478, 3) landmark positions on mesh V (model topology) for a view at `yaw_deg`."""
        return self.vertex_weights(faces, len(V), yaw_deg) @ np.asarray(V)

    def save(self, path):
        save_npz_atomic(path, triangles=self.triangles, barycentric=self.barycentric, spread_mm=self.spread_mm,
                        weights=self.weights, contour_ids=self.contour_ids, contour_yaws=self.contour_yaws,
                        contour_triangles=self.contour_triangles, contour_barycentric=self.contour_barycentric)

    @staticmethod
    def load(path, report=None):
        z = np.load(path)
        return LandmarkEmbedding(**{k: z[k] for k in z.files}, report=report or {})


def load_embedding(model: MorphableModel):
    """The embedding stored with an installed model, or None (read from disk on every call:
    `PreparedModel.embedding` keeps it)."""
    folder = model.metadata.get("folder")
    path = Path(folder) / EMBEDDING_FILE if folder else None
    if path is None or not path.is_file():
        return None
    return LandmarkEmbedding.load(path, model.metadata.get("landmark_embedding"))
