"""Pictures of a fit for a person to look at.

- `face_overlay`: the photo with the fitted face area (not the scalp, neck or back of the head, which a
  photo does not constrain) drawn over it as a grey, shaded, semi-transparent surface, so that hair,
  hats and collars stay visible and the fit's shape shows in its shading.
- `textured_render`: the mesh rendered with its UV texture (the renderer's triangle and barycentric
  maps give each pixel its UV; the texture is sampled there), shaded by a key light.
- `fit_preview`: one panel, photo | overlay | the fitted shape at a three-quarter view | the same with
  the texture, each a square crop around the face.
"""
import numpy as np

from ..geometry.camera import crop_image, look_at_face, square_box, yaw_of_rotation
from ..geometry.draw import draw_text
from ..geometry.mesh import interpolate
from ..geometry.render import get_renderer
from .texture import sample_image

OVERLAY_ALPHA = 0.55
KEY_LIGHT = (-0.35, -0.45, -0.82)        # from the upper left, camera frame
SURFACE_GREY = (0.78, 0.78, 0.80)
PANEL_BACKGROUND = (0.16, 0.16, 0.18)
THREE_QUARTER_YAW_DEG = 40.0


def face_overlay(image, prepared, V, camera, alpha=OVERLAY_ALPHA):
    """(H, W, 3) uint8: the photo (H, W, 3) uint8 with the front of the face of mesh V (N, 3; model frame,
    mm; `PreparedModel.front_faces`) seen by `camera` blended over it, grey and shaded."""
    F = prepared.front_faces
    r = get_renderer().render(V, F, camera, vertex_colors=np.tile(SURFACE_GREY, (len(V), 1)),
                              light_dir=KEY_LIGHT, ambient=0.35, diffuse=0.7)
    out = image.astype(np.float32) / 255.0
    m = r.mask
    out[m] = (1 - alpha) * out[m] + alpha * r.color[m]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def grey_render(prepared, V, camera, background=PANEL_BACKGROUND):
    """The renderer's result for mesh V (model frame, mm) seen by `camera`: grey, shaded by the key light."""
    return get_renderer().render(V, prepared.render_faces, camera, vertex_colors=np.tile(SURFACE_GREY, (len(V), 1)),
                                 light_dir=KEY_LIGHT, background=background)


def textured_render(prepared, V, camera, texture, grey=None):
    """(h, w, 3) uint8: mesh V (model frame, mm) seen by `camera`, its face area coloured by the UV
    `texture` (T, T, 3) uint8 in the model's UV layout and shaded by the key light; the rest of the head
    (which the photo's texture does not cover) grey. grey: `grey_render` of the same view, when the
    caller has it."""
    model = prepared.model
    F = prepared.render_faces
    in_face = np.zeros(model.n_vertices, bool)
    in_face[prepared.face_area.domain] = True
    r = grey_render(prepared, V, camera) if grey is None else grey
    out = r.color.astype(np.float32)
    m = r.mask.copy()
    m[m] = in_face[F[r.triangle_id[m]]].all(axis=1)
    tri = prepared.render_triangle_ids[r.triangle_id[m]]
    uv = interpolate(model.uv, model.uv_faces, tri, r.barycentric[m].astype(np.float64))
    T = texture.shape[0]
    px = np.column_stack([uv[:, 0] * T - 0.5, (1 - uv[:, 1]) * T - 0.5])
    colour = sample_image(texture.astype(np.float32) / 255.0, px)[:, :3]
    n = r.normal[m].astype(np.float64)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    lambert = np.clip(-(n @ np.asarray(KEY_LIGHT)) / np.linalg.norm(KEY_LIGHT), 0.0, 1.0)
    out[m] = colour * (0.55 + 0.45 * lambert)[:, None]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def three_quarter_camera(prepared, V, yaw_deg, size):
    """A camera of size² pixels that frames the face area of V (model frame, mm) turned by yaw_deg."""
    P = V[prepared.face_area.domain]
    center = P.mean(0)
    extent = float(np.ptp(P, axis=0).max())
    focal = 4.0 * size
    return look_at_face(center, yaw_deg, 5.0, focal * extent / (0.75 * size), focal, size, size)


def fit_preview(image, prepared, V, camera, overlay, texture=None, size=384):
    """(size, 4 size, 3) uint8 panel: photo | overlay | the shape at a three-quarter view | the same with
    the texture (or a note when there is none). The first two are the same square crop around the face
    area's projection; the views turn towards the side the photo shows least of its own yaw."""
    pts = camera.project(V[prepared.face_area.domain])
    box = square_box(pts, 0.12, whole_pixels=True)
    photo = crop_image(image, box, size)[0]
    over = crop_image(overlay, box, size)[0]  # the overlay without its caption: the crop has its own
    yaw = THREE_QUARTER_YAW_DEG if yaw_of_rotation(camera.R) <= 0 else -THREE_QUARTER_YAW_DEG
    cam = three_quarter_camera(prepared, V, yaw, size)
    grey = grey_render(prepared, V, cam)
    shape = grey.color_uint8()
    if texture is not None and prepared.model.uv is not None:
        textured, note = textured_render(prepared, V, cam, texture, grey), "textured"
    else:
        textured, note = np.full_like(shape, int(PANEL_BACKGROUND[0] * 255)), "no texture"
    captions = ("photo", "overlay", f"shape, yaw {yaw:+.0f}", note)
    tiles = [draw_text(t, [c], origin=(8, 20), scale=0.5) for t, c in zip((photo, over, shape, textured), captions)]
    return np.hstack(tiles)
