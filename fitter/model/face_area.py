"""The model's face area as a submesh, and the tables that tie it to the whole model and the landmarks.

The medium stage deforms it (fitter.photo.medium) and registration registers it (fitter.registration.register); both need
the same tables, kept once per model by `PreparedModel.face_area`:
- `domain` (n,) the model vertices of the face area, `F_local` (M, 3) its triangles in local indices,
  `local_of_global` (N,) the local index of each model vertex (−1 outside);
- `vertex_of_landmark` (478,) the local vertex nearest to each landmark's embedded point (the largest
  barycentric weight of its triangle; −1 when outside), and per contour yaw bin for the contour points;
- how a displacement of the face area extends to the whole mesh (`extend`): vertices connected to it
  (head, neck, mouth and eye sockets) take the displacement of the nearest face-area vertex; separate
  parts (eyeballs, teeth, gums, lashes) keep theirs.
"""
import numpy as np
import scipy.sparse.csgraph as csgraph
from scipy.spatial import cKDTree

from ..geometry.mesh import adjacency, submesh
from .embedding import LandmarkEmbedding
from .morphable import MorphableModel


class FaceArea:
    """The face area of `model` (its `region`, default 'face'; the whole mesh when it has none)."""

    def __init__(self, model: MorphableModel, emb: LandmarkEmbedding, region="face"):
        self.model = model
        N = model.n_vertices
        mask = model.region_mask(region) if region in model.regions else np.ones(N, bool)
        self.F_local, self.domain = submesh(model.faces, mask)
        self.local_of_global = -np.ones(N, np.int64)
        self.local_of_global[self.domain] = np.arange(len(self.domain))
        F = model.faces
        # landmark -> nearest vertex of its embedded triangle (the largest barycentric weight)
        self.vertex_of_landmark = self.local(F[emb.triangles, np.argmax(emb.barycentric, axis=1)])
        self.contour_ids = np.asarray(emb.contour_ids, np.int64)
        self.contour_vertices = [self.local(F[emb.contour_triangles[b], np.argmax(emb.contour_barycentric[b], axis=1)])
                                 for b in range(len(emb.contour_yaws))]
        self._carry_table(mask)

    def local(self, global_ids):
        """Local indices (−1 outside the face area) of model vertices."""
        return self.local_of_global[np.asarray(global_ids, np.int64)]

    def landmark_vertices(self, b):
        """(478,) local vertex of each landmark for contour yaw bin b."""
        v = self.vertex_of_landmark.copy()
        if len(self.contour_ids):
            v[self.contour_ids] = self.contour_vertices[b]
        return v

    def _carry_table(self, mask):
        """For each vertex outside the domain: its nearest domain vertex, and the groups of vertices in
        components without any domain vertex (they do not move)."""
        model = self.model
        outside = np.flatnonzero(~mask)
        self.outside = outside
        if len(outside) == 0:
            self.nearest, self.rigid_groups = np.zeros(0, np.int64), []
            return
        self.nearest = cKDTree(model.mean[self.domain]).query(model.mean[outside])[1]
        _, comp = csgraph.connected_components(adjacency(model.faces, model.n_vertices), directed=False)
        touching = np.unique(comp[self.domain])
        pos = np.searchsorted(outside, np.arange(model.n_vertices))
        self.rigid_groups = [pos[np.flatnonzero(comp == c)]  # indices into `outside`
                             for c in np.setdiff1d(np.unique(comp[outside]), touching)]

    def extend(self, D_local):
        """(N, 3) displacement of the whole mesh from the face-area displacement (n, 3)."""
        D = np.zeros((self.model.n_vertices, 3))
        D[self.domain] = D_local
        if len(self.outside):
            Do = D_local[self.nearest]
            for g in self.rigid_groups:
                Do[g] = 0.0
            D[self.outside] = Do
        return D
