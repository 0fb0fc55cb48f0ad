"""Closest points on a triangle mesh: the project's one closest-point routine (open3d's BVH).

Returns the point, its triangle and its barycentric coordinates (b0, b1, b2) with
point = b0 V[F[t, 0]] + b1 V[F[t, 1]] + b2 V[F[t, 2]].
"""
from dataclasses import dataclass

import numpy as np

from .mesh import interpolate


@dataclass
class ClosestPoints:
    points: np.ndarray       # (Q, 3)
    triangles: np.ndarray    # (Q,) int64 index into F
    barycentric: np.ndarray  # (Q, 3)
    distances: np.ndarray    # (Q,)


class MeshQuery:
    """A BVH over one mesh, built once and queried many times."""

    def __init__(self, V, F):
        import open3d as o3d

        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(np.asarray(V, np.float32)),
                                 o3d.core.Tensor(np.asarray(F, np.uint32)))
        self.V = np.asarray(V, np.float64)
        self.F = np.asarray(F)

    def closest(self, Q) -> ClosestPoints:
        import open3d as o3d

        Q = np.asarray(Q, np.float64)
        r = self.scene.compute_closest_points(o3d.core.Tensor(Q.astype(np.float32)))
        tri = r["primitive_ids"].numpy().astype(np.int64)
        uv = r["primitive_uvs"].numpy().astype(np.float64)
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
        bary = np.clip(bary, 0.0, 1.0)
        bary /= bary.sum(axis=1, keepdims=True)
        P = interpolate(self.V, self.F, tri, bary)  # float64, exactly on the surface
        return ClosestPoints(P, tri, bary, np.linalg.norm(P - Q, axis=1))


def closest_points(V, F, Q) -> ClosestPoints:
    """Closest point on mesh (V, F) to each row of Q (Q, 3)."""
    return MeshQuery(V, F).closest(Q)
