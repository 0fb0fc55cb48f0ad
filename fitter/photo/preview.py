"""Preview of an installed model: a render with its landmark embedding drawn on it."""
import numpy as np

from ..detection import landmarks as lmk
from ..errors import InputError, NoFaceError
from ..geometry.camera import look_at_face
from ..geometry.draw import draw_crosses, draw_points, draw_text
from ..geometry.render import depth_visible, get_renderer
from ..model.painting import DISTANCE_MM, FOCAL_PX, RENDER_BACKGROUND


def model_preview(prepared, yaw=0.0, pitch=0.0, identity_seed=None, size=768, detect=True):
    """(size, size, 3) uint8 picture: the model (mean identity, or a random one for identity_seed) at
    yaw/pitch with its embedded landmarks (green; hollow where hidden), their iBUG-68 equivalents
    (yellow), the model's own 68 landmark vertices (red crosses) and, if `detect`, what MediaPipe
    detects on this very render (blue), so the embedding can be judged by eye."""
    model, emb = prepared.model, prepared.require_embedding()
    if not -90 <= yaw <= 90 or not -90 <= pitch <= 90:
        raise InputError("--yaw and --pitch must be within [-90, 90] degrees")
    alpha = None
    if identity_seed is not None:
        alpha = model.random_coefficients(np.random.default_rng(identity_seed), 1.0)[0]
    V = model.shape(alpha)
    center = V[model.regions["face"]].mean(0) if "face" in model.regions else V.mean(0)
    scale = size / 512.0
    cam = look_at_face(center, yaw, pitch, DISTANCE_MM, FOCAL_PX * scale, size, size)
    res = get_renderer().render(V, prepared.render_faces, cam, vertex_colors=prepared.painted_albedo,
                                background=RENDER_BACKGROUND)
    img = res.color_uint8()
    P = emb.points(V, model.faces, yaw)
    uv = cam.project(P)
    visible = depth_visible(uv, cam.to_camera(P)[:, 2], res.depth, 2.0, window=0)
    caption = [f"{model.name}  yaw {yaw:+.0f}  pitch {pitch:+.0f}" +
               ("" if identity_seed is None else f"  identity seed {identity_seed}"),
               "green: embedded 478 (hollow = hidden)", "yellow: embedded as iBUG-68"]
    if detect:
        try:
            det = lmk.detect_landmarks(img)[0].points
            img = draw_points(img, det, color=(60, 140, 255), radius=1.2 * scale)
            err = np.linalg.norm(det - uv, axis=1)
            caption.append(f"blue: detected on this render (median gap {np.median(err):.1f} px)")
        except NoFaceError as e:  # the preview still shows the embedding when detection fails
            caption.append(f"detector: {e}")
    img = draw_points(img, uv, color=(40, 230, 40), radius=1.5 * scale, visible=visible)
    img = draw_points(img, lmk.to_68(uv), color=(255, 225, 0), radius=2.5 * scale, visible=lmk.to_68(visible[:, None].astype(float))[:, 0] > 0.5)
    ref = model.metadata.get("reference_landmarks_68")
    if ref:
        img = draw_crosses(img, cam.project(V[np.asarray(ref)]), size=4 * scale)
        caption.append("red x: the model's own 68 landmark vertices")
    return draw_text(img, caption, scale=0.5 * scale)
