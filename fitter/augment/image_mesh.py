"""A mesh of the whole image for out-of-plane augmentation (S1 §3.2, after 3DDFA's face profiling): the
face area from the registration (the model's own triangles, camera frame, mm) and the rest of the image
from anchors — a grid over the image outside the face, its border included — Delaunay-triangulated
together with the face area's border vertices. The anchors' depths follow S1 Eq. 8
(fitter.augment.anchors): the observed depth where it exists, the face border's depth held (weight
BORDER_WEIGHT), smoothness elsewhere. Every vertex keeps its source pixel, so a view of the mesh from any
pose takes its colours from the source image (`render_pose`).

Turning the head moves the face area fully and the anchors less with their distance from the face: the
anchors within RING_FACE_WIDTHS face widths of the face's silhouette follow it by a weight falling
linearly from 1 to 0, the rest of the background stays, so the image stays covered and the warp is
confined to a ring around the head (as 3DDFA's face profiling keeps its outer anchors).
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
RING_FACE_WIDTHS = 0.75  # anchors within this many face widths of the face turn with it (weight 1 -> 0)


@dataclass
class ImageMesh:
    X: np.ndarray            # (K, 3) source camera frame, mm: the face-area vertices first, then the anchors
    source_px: np.ndarray    # (K, 2) each vertex's pixel in the source image
    F: np.ndarray            # (T, 3) int32: the face area's triangles first, then the background's
    n_face_vertices: int
    n_face_triangles: int
    K: np.ndarray            # (3, 3) the source camera
    size: tuple              # (W, H)
    follow: np.ndarray = None  # (K,) how much each vertex turns with the head (1: the face area)

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
    face_width = float(np.ptp(uf[:, 0]))
    dist = cv2.distanceTransform((~silhouette).astype(np.uint8), cv2.DIST_L2, 5)
    px = np.clip(np.rint(anchors).astype(int), [0, 0], [W - 1, H - 1])
    follow = np.clip(1.0 - dist[px[:, 1], px[:, 0]] / max(RING_FACE_WIDTHS * face_width, 1.0), 0.0, 1.0)
    return ImageMesh(np.vstack([Vf, Xa]), np.vstack([uf, anchors]), np.vstack([Ff, index[T]]).astype(np.int32),
                     len(Vf), len(Ff), cam.K, (W, H), np.concatenate([np.ones(len(Vf)), follow]))


def turned_vertices(mesh: ImageMesh, R_head):
    """(K, 3) the mesh's vertices with the head turned by R_head about the face centre (each vertex by its
    `follow` weight, blending its position between staying and turning)."""
    c = mesh.face_center
    turned = (mesh.X - c) @ np.asarray(R_head, float).T + c
    return mesh.X + mesh.follow[:, None] * (turned - mesh.X)


def render_pose(mesh: ImageMesh, image, R_head):
    """The source image seen with the head turned by R_head (3×3, about the face centre, source camera
    frame): (H, W, 3) uint8 with every pixel's colour taken from the source pixel its surface point came
    from, (H, W) bool coverage, and (H, W) int triangle ids (-1: none)."""
    W, H = mesh.size
    r = get_renderer().render(turned_vertices(mesh, R_head), mesh.F, Camera(mesh.K, np.eye(3), np.zeros(3), W, H))
    m = r.mask
    tri = mesh.F[r.triangle_id[m]]
    uv = (r.barycentric[m].astype(np.float64)[:, :, None] * mesh.source_px[tri]).sum(1)
    out = np.zeros((H, W, 3), np.float32)
    out[m] = sample_image(np.asarray(image, np.float32) / 255.0, uv)[:, :3]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), m, r.triangle_id


def seen_triangles(mesh: ImageMesh):
    """(T,) bool: the triangles the source camera saw (drawn in the mesh's own render at the source pose;
    turned away or hidden ones are not)."""
    _, covered, tri = render_pose(mesh, np.zeros((mesh.size[1], mesh.size[0], 3), np.uint8), np.eye(3))
    seen = np.zeros(len(mesh.F), bool)
    seen[np.unique(tri[covered])] = True
    return seen


def face_appearance(prepared, V_cam, K, image):
    """The face's albedo and SH lighting (fitter.texture.fit_texture) from the source image, for the parts a
    new pose shows that the source did not. V_cam: (N, 3) the registration, camera frame, mm."""
    from ..render import vertex_visibility
    from ..texture import fit_texture

    H, W = image.shape[:2]
    cam = Camera(np.asarray(K, float), np.eye(3), np.zeros(3), W, H)
    F = prepared.render_faces
    vis = vertex_visibility(V_cam, F, cam, get_renderer().render(V_cam, F, cam))
    return fit_texture(prepared, V_cam, cam, image, vis)


def augment_pose(prepared, mesh: ImageMesh, image, R_head, appearance, seen):
    """The sample at head rotation R_head: the source's colours where the source saw the surface; the face
    the source never saw drawn from its albedo under the fitted SH light and blended in by Poisson editing
    (cv2.seamlessClone); background the source never saw, and pixels no surface covers, inpainted from
    their surroundings. Returns (H, W, 3) uint8 and the (H, W) bool mask of invented pixels."""
    import cv2

    from ..mesh import vertex_normals
    from ..texture import sh_basis

    W, H = mesh.size
    img, covered, tri = render_pose(mesh, image, R_head)
    unseen = np.zeros((H, W), bool)
    unseen[covered] = ~seen[tri[covered]]
    face_px = covered & (tri < mesh.n_face_triangles) & (tri >= 0)
    face_unseen = unseen & face_px
    if face_unseen.any():
        Vf = turned_vertices(mesh, R_head)[:mesh.n_face_vertices]
        Ff = mesh.F[:mesh.n_face_triangles]
        albedo = appearance.albedo[prepared.face_area.domain]
        shade = np.clip(sh_basis(vertex_normals(Vf, Ff)) @ appearance.sh, 0, None)
        r = get_renderer().render(Vf, Ff, Camera(mesh.K, np.eye(3), np.zeros(3), W, H),
                                  vertex_colors=np.clip(albedo * shade, 0, 1), ambient=1.0, diffuse=0.0)
        model_img = r.color_uint8()
        mask8 = (cv2.dilate(face_unseen.astype(np.uint8), np.ones((5, 5), np.uint8)) & face_px).astype(np.uint8) * 255
        ys, xs = np.nonzero(mask8)
        if 2 <= ys.min() and ys.max() < H - 2 and 2 <= xs.min() and xs.max() < W - 2:
            center = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
            img = cv2.seamlessClone(model_img, img, mask8, center, cv2.NORMAL_CLONE)
        else:  # Poisson editing needs a border around the region: paste where it touches the image edge
            img[mask8 > 0] = model_img[mask8 > 0]
        invented = face_unseen | (unseen & ~face_px) | ~covered
    else:
        invented = unseen | ~covered
    holes = (invented & ~face_unseen).astype(np.uint8)
    if holes.any():
        img = cv2.inpaint(img, holes, 5, cv2.INPAINT_TELEA)
    return img, invented
