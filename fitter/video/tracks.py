"""Tracks of skin points across the views of one face, shared by the two ways they are found (SIFT
matches between kept views, fitter.video.bundle; points followed from frame to frame, fitter.video.flow):
where keypoints may be taken (`feature_mask`), where a pixel lands on the fitted mesh (`lift`), and the
`Tracks` the model-space refinement adjusts."""
from dataclasses import dataclass

import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import Camera
from ..geometry.render import GEOMETRY_ONLY, RenderResult, get_renderer

MIN_COS = 0.3               # a point is lifted where its surface faces the view by more than this
EYE_MARGIN_IOD = 0.06       # the eyes and the mouth's opening, widened by this, give no points
DEPTH_JUMP_MM = 8.0         # a point whose patch spans a depth jump over this is dropped


@dataclass
class ViewGeometry:
    """One view's fitted mesh and its geometry-only render, made once per round of the refinement and
    shared by the track builders (SIFT, flow, wide) that lift pixels onto it."""

    vertices: np.ndarray    # (N, 3) the identity at the view's expression, model frame, mm
    render: RenderResult    # through the view's camera, GEOMETRY_ONLY


def view_geometry(prepared, views, identity):
    """ViewGeometry per view (BundleView list: camera and expression) for the identity (K,)."""
    out = []
    for v in views:
        V = prepared.model.shape(identity, v.expression)
        out.append(ViewGeometry(V, get_renderer().render(V, prepared.render_faces, v.camera, maps=GEOMETRY_ONLY)))
    return out


def face_area_triangles(prepared):
    """(len(render_faces),) bool: the drawn triangles that lie in the face area (where tracks may lie)."""
    return (prepared.face_area.local(prepared.render_faces) >= 0).all(1)


@dataclass
class Tracks:
    view: np.ndarray     # (M,) observation -> view
    track: np.ndarray    # (M,) observation -> track
    uv: np.ndarray       # (M, 2) px
    tri: np.ndarray      # (T,) anchor triangle (index into the faces given)
    bary: np.ndarray     # (T, 3)
    sigma: np.ndarray    # (M,) px: each observation's position noise (grows with its keypoint's scale)

    @property
    def n(self):
        return len(self.tri)


def empty_tracks():
    return Tracks(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 2)), np.zeros(0, int), np.zeros((0, 3)), np.zeros(0))


def merge_tracks(a: Tracks, b: Tracks):
    """One Tracks holding both (b's track ids after a's)."""
    return Tracks(np.concatenate([a.view, b.view]).astype(int), np.concatenate([a.track, b.track + a.n]).astype(int),
                  np.concatenate([a.uv, b.uv]), np.concatenate([a.tri, b.tri]).astype(int),
                  np.concatenate([a.bary, b.bary]), np.concatenate([a.sigma, b.sigma]))


def face_region_mask(points, shape):
    """(H, W) bool: the convex hull of the detected landmarks (478, 2), the face from brows to chin — the
    pixels a view's texture is taken from (not the hair or background around the face area's border)."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.rint(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def feature_mask(points, shape):
    """(H, W) uint8 mask of where keypoints are taken: inside the landmarks' (478, 2) convex hull, away
    from the eyes (gaze, blinks, and the model's eyeballs are not skin) and the mouth's opening."""
    import cv2

    mask = face_region_mask(points, shape).astype(np.uint8)
    groups = lmk.polygons()
    margin = max(2, int(round(EYE_MARGIN_IOD * lmk.outer_interocular(points))))
    holes = np.zeros(shape, np.uint8)
    for name in ("left_eye", "right_eye", "inner_lips"):
        for loop in groups.get(name, []):
            cv2.fillConvexPoly(holes, cv2.convexHull(np.rint(points[loop]).astype(np.int32)), 1)
    holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1)))
    return (mask & (1 - holes)) * 255


def depth_edges(depth, radius_px, jump_mm=DEPTH_JUMP_MM):
    """(H, W) bool: pixels within radius_px of an occluding edge or of the background (a jump in the
    rendered depth over jump_mm) — where a keypoint's patch straddles two surfaces."""
    import cv2

    far = np.where(depth > 0, depth, 1e6).astype(np.float32)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    return (cv2.dilate(far, k) - cv2.erode(far, k)) > jump_mm


def lift(V, faces, camera: Camera, uv, allowed_triangles, radius_px=None, render=None):
    """Where pixels uv (n, 2) land on the mesh (V (N, 3), faces) as the camera sees it: (triangle (n,),
    barycentric (n, 3), facing cosine (n,)); triangle −1 where off the allowed triangles or facing less
    than MIN_COS. Exact ray–triangle barycentrics at the sub-pixel position. render: the mesh's
    geometry-only render through the camera, when made already (ViewGeometry)."""
    n = len(uv)
    tri = -np.ones(n, np.int64)
    bary = np.zeros((n, 3))
    cos = np.zeros(n)
    if n == 0:
        return tri, bary, cos
    r = render if render is not None else get_renderer().render(V, faces, camera, maps=GEOMETRY_ONLY)
    H, W = r.triangle_id.shape
    px = np.clip(np.rint(uv).astype(int), 0, [W - 1, H - 1])
    t = r.triangle_id[px[:, 1], px[:, 0]]
    ok = t >= 0
    ok[ok] = allowed_triangles[t[ok]]
    if radius_px is not None:
        ok &= ~depth_edges(r.depth, max(1, int(round(radius_px))))[px[:, 1], px[:, 0]]
    idx = np.flatnonzero(ok)
    T = faces[t[idx]]
    P = camera.to_camera(V[T.ravel()]).reshape(-1, 3, 3)      # (m, 3 corners, 3)
    d = camera.rays(uv[idx])
    A = np.stack([P[:, 0] - P[:, 2], P[:, 1] - P[:, 2], -d], axis=2)
    with np.errstate(all="ignore"):
        sol = np.linalg.solve(A, -P[:, 2][..., None])[..., 0]
    b = np.column_stack([sol[:, 0], sol[:, 1], 1 - sol[:, 0] - sol[:, 1]])
    # the sub-pixel position may fall just outside the pixel centre's triangle: its plane extended there
    exact = np.isfinite(b).all(1) & (b > -0.5).all(1)
    b = np.where(exact[:, None], b, r.barycentric[px[idx, 1], px[idx, 0]])
    b /= b.sum(1, keepdims=True)
    nrm = np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    X = (b[:, :, None] * P).sum(1)
    c = -(nrm * X).sum(1) / np.linalg.norm(X, axis=1)
    keep = c > MIN_COS
    tri[idx[keep]], bary[idx[keep]], cos[idx[keep]] = t[idx[keep]], b[keep], c[keep]
    return tri, bary, cos
