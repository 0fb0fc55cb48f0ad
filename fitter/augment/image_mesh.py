"""A mesh of the whole image for out-of-plane augmentation (S1 §3.2, after 3DDFA's face profiling): the
front of the face from the registration (the model's own triangles of its front region — no ears, neck or
scalp, which the model rarely matches — camera frame, mm) and the rest of the image from anchors — a grid
over the image outside the face, twice as dense on the head, its border included — Delaunay-triangulated
together with the face's border vertices. The anchors' depths follow S1 Eq. 8 (fitter.augment.anchors): the
observed depth where it exists, the face border's depth held (weight BORDER_WEIGHT), smoothness elsewhere.
Every vertex keeps its source pixel, so a view of the mesh from any pose takes its colours from the source
image (`render_pose`).

Turning the head: the face and the head's anchors (inside the whole model's silhouette, widened for hair,
and observed within HEAD_DEPTH_SLACK_MM of the model head's depth: hair, ears, neck) turn rigidly about the
face centre; the other anchors within RING_FACE_WIDTHS face widths of the head follow its image motion by
a weight falling linearly from 1 to 0, the rest of the background (and the image's border) stays, so the
image stays covered and the warp is confined to a ring around the head (as 3DDFA's face profiling keeps
its outer anchors). The head is rendered over the background, so background never covers the face.
"""
from dataclasses import dataclass

import numpy as np

from ..geometry.camera import Camera
from ..geometry.mesh import boundary_vertices, submesh
from ..geometry.render import GEOMETRY_ONLY, get_renderer
from ..photo.texture import sample_image
from .anchors import AnchorMesh, grid_anchors, sample_depth, solve_depths

BORDER_WEIGHT = 100.0    # the face border's depth is a hard constraint of Eq. 8 next to the observed depth's 1
FACE_MARGIN_PX = 3       # anchors this close to the face's silhouette are left out
RING_FACE_WIDTHS = 0.75  # anchors within this many face widths of the head turn with it (weight 1 -> 0)
SUPPORT_MM = 15.0               # a face-area vertex beyond the front of the face is kept within this of the depth
HEAD_DENSITY = 2                # anchors on the head are this many times denser (per axis) than elsewhere
HEAD_MARGIN_FACE_WIDTHS = 0.15  # the model head's silhouette widened by this (hair) to find the head's anchors
SHEET_SLOPE = 3.0               # a background triangle steeper than this (depth span / width) is a rubber sheet
HEAD_DEPTH_SLACK_MM = 40.0      # a head anchor's depth is within this of the model head's (hair, fit error)


@dataclass
class ImageMesh:
    X: np.ndarray            # (K, 3) source camera frame, mm: the face's vertices first, then the anchors
    source_px: np.ndarray    # (K, 2) each vertex's pixel in the source image
    F: np.ndarray            # (T, 3) int32: the face's triangles first, then the anchors' (Delaunay)
    n_face_vertices: int
    n_face_triangles: int
    camera: Camera           # the source camera (its intrinsics and size; identity pose)
    size: tuple              # (W, H)
    face_vertices: np.ndarray  # (n_face_vertices,) the model's vertex of each face vertex
    follow: np.ndarray = None  # (K,) how much each vertex moves with the head (1: the face, the head)
    rigid: np.ndarray = None   # (K,) bool: turns rigidly with the head (the face and the head's anchors)
    leader: np.ndarray = None  # (K,) the head vertex whose image motion a background anchor follows

    @property
    def face_center(self):
        return self.X[:self.n_face_vertices].mean(0)


def build_image_mesh(prepared, V_cam, K, depth, spacing_px=16.0, smoothness=0.1):
    """The image mesh of a registered capture. V_cam: (N, 3) the registration (the whole model) in the camera
    frame, mm; K: (3, 3) px; depth: (H, W) mm, 0/NaN = missing (its size is the image's)."""
    import cv2
    from scipy.ndimage import distance_transform_edt
    from scipy.spatial import cKDTree

    H, W = np.asarray(depth).shape
    model, area = prepared.model, prepared.face_area
    V_cam = np.asarray(V_cam, float)
    cam = Camera(np.asarray(K, float), np.eye(3), np.zeros(3), W, H)
    # the registered face: the front of the face, and the rest of the face area (scalp, ears, neck) where the
    # observed depth agrees with it (not under hair, a collar, or off a cut scan)
    Va = V_cam[area.domain]
    front = np.isin(area.domain, model.region(model.front_region()))
    observed_a = sample_depth(depth, cam.project(Va))
    supported = front | ((observed_a > 0) & (np.abs(observed_a - Va[:, 2]) < SUPPORT_MM))
    Ff, keep = submesh(area.F_local, supported)
    face_ids = area.domain[keep]
    Vf = V_cam[face_ids]
    uf = cam.project(Vf)
    silhouette = get_renderer().render(Vf, Ff, cam).mask
    face_width = max(float(np.ptp(uf[:, 0])), 1.0)
    # the head beyond the face area (scalp, hair, ears, neck): the model head's silhouette, widened for hair
    grow = int(round(HEAD_MARGIN_FACE_WIDTHS * face_width))
    head_regions = [r for r in ("face", "head_and_neck") if r in model.regions]  # not the shoulders
    r_head = get_renderer().render(V_cam, model.faces_in(*head_regions) if head_regions else prepared.render_faces,
                                   cam)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)
    head = cv2.dilate(r_head.mask.astype(np.uint8), disc) > 0
    nearest = distance_transform_edt(~r_head.mask, return_distances=False, return_indices=True)
    head_depth = r_head.depth[nearest[0], nearest[1]]  # the model head's depth at (or nearest to) each pixel
    near_face = cv2.dilate(silhouette.astype(np.uint8), np.ones((2 * FACE_MARGIN_PX + 1,) * 2, np.uint8)) > 0
    coarse, fine = grid_anchors(W, H, spacing_px), grid_anchors(W, H, spacing_px / HEAD_DENSITY)
    on = lambda mask, pts: mask[np.clip(np.rint(pts[:, 1]).astype(int), 0, H - 1),  # noqa: E731
                                np.clip(np.rint(pts[:, 0]).astype(int), 0, W - 1)]
    anchors = np.vstack([coarse[~on(head, coarse)], fine[on(head, fine)]])  # denser on the head
    anchors = anchors[~on(near_face, anchors)]
    border = np.flatnonzero(boundary_vertices(Ff, len(Vf)))
    points = np.vstack([uf[border], anchors])
    mesh2d = AnchorMesh.of(points)
    observed = np.concatenate([Vf[border, 2], sample_depth(depth, anchors)])
    weights = np.concatenate([np.full(len(border), BORDER_WEIGHT), (observed[len(border):] > 0).astype(float)])
    d = solve_depths(mesh2d, observed, weights, smoothness)[len(border):]
    Xa = cam.rays(anchors) * d[:, None]
    # background triangles: Delaunay's, minus those the face covers (centroid and edge midpoints
    # inside the face's silhouette, eroded so that the thin slits of the eyes and the mouth stay covered)
    T = mesh2d.triangles
    inner = cv2.erode(silhouette.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    P = points[T]
    probes = [P.mean(1), (P[:, 0] + P[:, 1]) / 2, (P[:, 1] + P[:, 2]) / 2, (P[:, 2] + P[:, 0]) / 2]
    T = T[~np.all([on(inner, q) for q in probes], axis=0)]
    index = np.concatenate([border, len(Vf) + np.arange(len(anchors))])  # Delaunay point -> mesh vertex
    # anchors on the head (inside its silhouette, observed at its depth) turn with it; the rest follow less
    # with their distance from the head, so that the warp stays in a ring around it
    on_head = on(head, anchors) & (observed[len(border):] > 0) & \
        (np.abs(d - on(head_depth, anchors)) < HEAD_DEPTH_SLACK_MM)
    moving = silhouette.copy()
    a_px = np.clip(np.rint(anchors).astype(int), [0, 0], [W - 1, H - 1])
    moving[a_px[on_head, 1], a_px[on_head, 0]] = True
    moving = cv2.morphologyEx(moving.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((int(spacing_px) + 1,) * 2, np.uint8))
    dist = cv2.distanceTransform((moving == 0).astype(np.uint8), cv2.DIST_L2, 5)
    follow = np.clip(1.0 - dist[a_px[:, 1], a_px[:, 0]] / (RING_FACE_WIDTHS * face_width), 0.0, 1.0)
    follow[on_head] = 1.0
    # the image's border stays where it is, so that the image stays covered
    on_border = (anchors[:, 0] <= -0.5 + 1e-6) | (anchors[:, 0] >= W - 0.5 - 1e-6) | \
        (anchors[:, 1] <= -0.5 + 1e-6) | (anchors[:, 1] >= H - 0.5 - 1e-6)
    follow[on_border], on_head[on_border] = 0.0, False
    X = np.vstack([Vf, Xa])
    px_all = np.vstack([uf, anchors])
    rigid = np.concatenate([np.ones(len(Vf), bool), on_head])
    heads = np.flatnonzero(rigid)
    leader = np.arange(len(X))
    leader[~rigid] = heads[cKDTree(px_all[heads]).query(px_all[~rigid])[1]]
    return ImageMesh(X, px_all, np.vstack([Ff, index[T]]).astype(np.int32), len(Vf), len(Ff), cam, (W, H),
                     face_ids, np.concatenate([np.ones(len(Vf)), follow]), rigid, leader)


def turned_vertices(mesh: ImageMesh, R_head):
    """(K, 3) the mesh's vertices with the head turned by R_head about the face centre: the head's vertices
    rigidly; each other anchor keeps its depth and moves in the image by its `follow` weight times the image
    motion of the nearest head vertex (a ring of background dragged along, the rest still)."""
    c = mesh.face_center
    turned = (mesh.X - c) @ np.asarray(R_head, float).T + c
    out = mesh.X.copy()
    out[mesh.rigid] = turned[mesh.rigid]
    ring = np.flatnonzero(~mesh.rigid & (mesh.follow > 0))
    if len(ring):
        lead = mesh.leader[ring]
        cam = mesh.camera
        moved = mesh.source_px[ring] + mesh.follow[ring, None] * (cam.pixels(turned[lead]) - cam.pixels(mesh.X[lead]))
        out[ring] = cam.rays(moved) * mesh.X[ring, 2:3]
    return out


@dataclass
class PoseView:
    """The image mesh seen at a head pose."""

    image: np.ndarray        # (H, W, 3) uint8: each pixel's colour from the source pixel its surface came from
    covered: np.ndarray      # (H, W) bool: a triangle covers the pixel
    triangle_id: np.ndarray  # (H, W) int: the mesh's triangle (-1: none)
    depth: np.ndarray        # (H, W) float32 mm, 0 = none
    vertices: np.ndarray     # (K, 3) the turned vertices
    source_uv: np.ndarray    # (n, 2) the source pixel of each covered pixel (row-major order of `covered`)
    barycentric: np.ndarray  # (n, 3) its barycentric coordinates in its triangle


def render_pose(mesh: ImageMesh, image, R_head):
    """The source image seen with the head turned by R_head (3×3, about the face centre, source camera
    frame): a PoseView."""
    W, H = mesh.size
    X = turned_vertices(mesh, R_head)
    # the head (the face and the triangles of the head's anchors) and the background in two renders, the
    # head laid over the background: background is never drawn over the face
    cam = mesh.camera
    head = mesh.rigid[mesh.F].all(1)
    # face triangles turned away from the camera are not drawn (on the face's open rims they would hide
    # what lies behind them)
    head[:mesh.n_face_triangles] &= view_cosines(mesh, X) > 0
    ids = [np.flatnonzero(head), np.flatnonzero(~mesh.rigid[mesh.F].all(1))]
    rh, rb = (get_renderer().render(X, mesh.F[i], cam, maps=GEOMETRY_ONLY) for i in ids)
    on_head = rh.mask
    triangle_id = np.where(on_head, ids[0][np.maximum(rh.triangle_id, 0)],
                           np.where(rb.mask, ids[1][np.maximum(rb.triangle_id, 0)], -1))
    depth = np.where(on_head, rh.depth, rb.depth)
    m = triangle_id >= 0
    tri = mesh.F[triangle_id[m]]
    b = np.where(on_head[m][:, None], rh.barycentric[m], rb.barycentric[m]).astype(np.float64)
    uv = np.einsum("nk,nkd->nd", b, mesh.source_px[tri])  # einsum: a sum over a short axis, fast
    out = np.zeros((H, W, 3), np.float32)
    out[m] = sample_image(np.asarray(image, np.float32) / 255.0, uv)[:, :3]
    return PoseView((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), m, triangle_id, depth, X, uv, b)


def seen_pixels(mesh: ImageMesh, view: PoseView, source_depth, facing):
    """(H, W) bool: the pixels of `view` whose surface point the source saw — it lies on a triangle that
    faced the source camera (`facing`, (T,) bool) and is not behind the source's own surface at its source
    pixel (`source_depth`: the mesh drawn at the source pose, `render_pose(mesh, _, I).depth`; the
    project's depth test)."""
    from ..geometry.render import depth_visible

    W, H = mesh.size
    tri = view.triangle_id[view.covered]
    z = np.einsum("nk,nk->n", view.barycentric, mesh.X[mesh.F[tri], 2])
    uv = np.clip(view.source_uv, 0, [W - 1, H - 1])
    seen = facing[tri] & depth_visible(uv, z, source_depth, np.maximum(2.0, 0.005 * z), window=1)
    out = np.zeros((H, W), bool)
    out[view.covered] = seen
    return out


def view_cosines(mesh: ImageMesh, X):
    """(n_face_triangles,) cos of the angle between each face triangle's normal (vertices X, camera frame)
    and the camera's ray to it: 1 facing the camera, <= 0 turned away."""
    from ..geometry.mesh import face_normals

    nf = mesh.n_face_triangles
    P = X[mesh.F[:nf]].mean(1)
    return (face_normals(X, mesh.F[:nf]) * -P).sum(1) / np.linalg.norm(P, axis=1)


def source_cosines(mesh: ImageMesh):
    """(T,) view_cosines at the source pose; background triangles get 1 (the image mesh is a height field
    of the source view)."""
    out = np.ones(len(mesh.F))
    out[:mesh.n_face_triangles] = view_cosines(mesh, mesh.X)
    return out


def rubber_sheets(mesh: ImageMesh):
    """(T,) bool: the background triangles steeper than SHEET_SLOPE (depth span over width), which the
    image mesh stretches across a depth edge between the head and what lies behind it."""
    nf = mesh.n_face_triangles
    B = mesh.X[mesh.F[nf:]]
    sheet = np.zeros(len(mesh.F), bool)
    sheet[nf:] = np.ptp(B[:, :, 2], axis=1) > SHEET_SLOPE * np.ptp(B[:, :, :2], axis=1).max(1)
    return sheet


def image_areas(uv, F):
    """(T,) unsigned areas (px²) of the triangles F with vertices at pixels uv (K, 2)."""
    a, b, c = uv[F[:, 0]], uv[F[:, 1]], uv[F[:, 2]]
    return 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
