"""A mesh of the whole image for out-of-plane augmentation (S1 §3.2, after 3DDFA's face profiling): the
face area from the registration (the model's own triangles, camera frame, mm) and the rest of the image
from anchors — a grid over the image outside the face, its border included — Delaunay-triangulated
together with the face area's border vertices. The anchors' depths follow S1 Eq. 8
(fitter.augment.anchors): the observed depth where it exists, the face border's depth held (weight
BORDER_WEIGHT), smoothness elsewhere. Every vertex keeps its source pixel, so a view of the mesh from any
pose takes its colours from the source image (`render_pose`).
"""
from dataclasses import dataclass

import numpy as np

from ..camera import Camera
from ..mesh import boundary_vertices
from ..render import get_renderer
from ..texture import sample_image
from .anchors import AnchorMesh, grid_anchors, sample_depth, solve_depths

BORDER_WEIGHT = 100.0    # the face border's depth is a hard constraint of Eq. 8 next to the observed depth's 1
FACE_MARGIN_PX = 3       # anchors this close to the face's silhouette are left out


@dataclass
class ImageMesh:
    X: np.ndarray            # (K, 3) source camera frame, mm: the face-area vertices first, then the anchors
    source_px: np.ndarray    # (K, 2) each vertex's pixel in the source image
    F: np.ndarray            # (T, 3) int32: the face area's triangles first, then the background's
    n_face_vertices: int
    n_face_triangles: int
    K: np.ndarray            # (3, 3) the source camera
    size: tuple              # (W, H)

    @property
    def face_center(self):
        return self.X[:self.n_face_vertices].mean(0)


def build_image_mesh(prepared, V_cam, K, depth, spacing_px=16.0, smoothness=0.1):
    """The image mesh of a registered capture. V_cam: (N, 3) the registration in the camera frame, mm; K:
    (3, 3) px; depth: (H, W) mm, 0/NaN = missing (its size is the image's)."""
    H, W = np.asarray(depth).shape
    area = prepared.face_area
    Vf = np.asarray(V_cam, float)[area.domain]
    Ff = area.F_local.astype(np.int32)
    cam = Camera(np.asarray(K, float), np.eye(3), np.zeros(3), W, H)
    uf = cam.project(Vf)
    silhouette = get_renderer().render(Vf, Ff, cam).mask
    import cv2

    near_face = cv2.dilate(silhouette.astype(np.uint8), np.ones((2 * FACE_MARGIN_PX + 1,) * 2, np.uint8)) > 0
    anchors = grid_anchors(W, H, spacing_px)
    px = np.clip(np.rint(anchors).astype(int), [0, 0], [W - 1, H - 1])
    anchors = anchors[~near_face[px[:, 1], px[:, 0]]]
    border = np.flatnonzero(boundary_vertices(Ff, len(Vf)))
    points = np.vstack([uf[border], anchors])
    mesh2d = AnchorMesh.of(points)
    observed = np.concatenate([Vf[border, 2], sample_depth(depth, anchors)])
    weights = np.concatenate([np.full(len(border), BORDER_WEIGHT), (observed[len(border):] > 0).astype(float)])
    d = solve_depths(mesh2d, observed, weights, smoothness)[len(border):]
    Xa = np.column_stack([anchors, np.ones(len(anchors))]) @ np.linalg.inv(cam.K).T * d[:, None]
    # background triangles: Delaunay's, minus those the face covers (centroid on the face's silhouette)
    T = mesh2d.triangles
    c = np.clip(np.rint(points[T].mean(1)).astype(int), [0, 0], [W - 1, H - 1])
    T = T[~silhouette[c[:, 1], c[:, 0]]]
    index = np.concatenate([border, len(Vf) + np.arange(len(anchors))])  # Delaunay point -> mesh vertex
    return ImageMesh(np.vstack([Vf, Xa]), np.vstack([uf, anchors]), np.vstack([Ff, index[T]]).astype(np.int32),
                     len(Vf), len(Ff), cam.K, (W, H))


def render_pose(mesh: ImageMesh, image, R_head):
    """The source image seen with the head turned by R_head (3×3, about the face centre, source camera
    frame): (H, W, 3) uint8 with every pixel's colour taken from the source pixel its surface point came
    from, (H, W) bool coverage, and (H, W) int triangle ids (-1: none)."""
    W, H = mesh.size
    c = mesh.face_center
    X = (mesh.X - c) @ np.asarray(R_head, float).T + c
    r = get_renderer().render(X, mesh.F, Camera(mesh.K, np.eye(3), np.zeros(3), W, H))
    m = r.mask
    tri = mesh.F[r.triangle_id[m]]
    uv = (r.barycentric[m].astype(np.float64)[:, :, None] * mesh.source_px[tri]).sum(1)
    out = np.zeros((H, W, 3), np.float32)
    out[m] = sample_image(np.asarray(image, np.float32) / 255.0, uv)[:, :3]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), m, r.triangle_id
