"""One augmented sample of a registered capture (S1 §3.2): the head turned by a yaw and a pitch about the
face centre, the image synthesised from the source's pixels through the image mesh
(fitter.augment.image_mesh), what the source never saw filled in, and the labels — exact, because they
are the registration moved by the same rigid transform.

What is invented (the `invented` mask):
- face the source never saw (turned away from the source camera, hidden behind the nose), or saw too
  obliquely (beyond GRAZING_COS) for a pose that enlarges it more than SHEET_STRETCH, is redrawn: from the
  source's colours at the mirror vertices (the face's symmetry, relit by the ratio of the fitted SH
  shading), else — on the front of the face — from the albedo under the SH light fitted to the source
  (fitter.photo.texture.fit_texture). The light turns with the head, as the seen pixels' shading does. The
  redrawn region is blended in by Poisson editing (cv2.seamlessClone), so that its level meets the image's;
- background the source never saw — the rubber sheets between the head and what lies behind it, where the
  new pose stretches them more than SHEET_STRETCH, and pixels no surface covers — is taken from the plate,
  the source with the head inpainted out (Telea, once per capture), at the same pixel (the background stays);
- the rest of the head the source never saw (hair, the side of the head where neither side was seen
  squarely) is inpainted from around it (the model's albedo is not the person's hair).
Background is never drawn over the face: the head is rendered over it (fitter.augment.image_mesh).

Labels of a sample, in its camera (the source camera; the head moved):
- `R`, `t`, `scale`: V = scale R (mean + S_morph) + t for the registration's vertices (S1 Eq. 7);
- `source_to_sample`: the 4×4 rigid transform that carries the head's points from the source camera frame
  to the sample's (rotation R_head about the face centre c: x' = R_head (x - c) + c);
- `yaw`, `pitch`, `roll` (degrees) of the face (fitter.geometry.camera.angles_of_rotation of R; yaw > 0: the nose
  towards the image's right, pitch > 0: the nose up);
- `landmarks_478` (MediaPipe order, the model's landmark embedding, its contour at the face's yaw) and
  `landmarks_68` (iBUG order, fitter.detection.landmarks.to_68), pixels, with a visibility flag each: in the image
  and not hidden behind the sample's own surface (the project's depth test);
- `face_box`: [x0, y0, x1, y1] px of the face's pixels in the sample.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..geometry.camera import MODEL_TO_OPENCV, Camera, angles_of_rotation, rotation_matrix
from ..geometry.render import depth_visible, get_renderer
from ..registration.capture import RegisteredCapture
from .image_mesh import (ImageMesh, build_image_mesh, image_areas, render_pose, rubber_sheets, seen_pixels,
                         source_cosines)

DEFAULT_YAWS = tuple(range(-90, 91, 15))
DEFAULT_PITCHES = (-20, 0, 20)
MAX_PITCH_DEG = 25.0
SHEET_STRETCH = 1.5  # a thin triangle stretched by more than this (area) shows what the source did not
GRAZING_COS = 0.2    # face seen more obliquely than ~78° is thin: the source has too few of its pixels
MIRROR_MIN_COS = 0.4  # a mirror vertex lends its colour when the source saw it within ~66° of square on
PLATE_MARGIN_PX = 4  # the head's mask is widened by this before it is inpainted out of the source (the plate)


@dataclass
class AugmentSource:
    """What every pose of one capture shares: the image mesh and what the source saw of it, and the face's
    appearance for what it did not."""

    capture: RegisteredCapture
    mesh: ImageMesh
    source_depth: np.ndarray  # (H, W) mm: the image mesh rendered at the source pose
    plate: np.ndarray         # (H, W, 3) uint8: the source with the head inpainted (the background behind it)
    facing: np.ndarray        # (T,) bool: triangles facing the source camera (the source drew them)
    head_triangles: np.ndarray  # (T,) bool: the face's and the head's (all three vertices turn with the head)
    fillable: np.ndarray      # (T,) bool: face redrawn from `fill` where unseen (the front; the rest if mirrored)
    thin: np.ndarray          # (T,) bool: seen with few pixels — rubber sheets, face seen at a grazing angle
    source_areas: np.ndarray  # (T,) px² of each triangle in the source image
    fill: np.ndarray          # (n_face_vertices, 3) in [0, 1]: the colours of unseen face (`fill_colors`)


def prepare_source(prepared, capture: RegisteredCapture, spacing_px=16.0, smoothness=0.1):
    """The AugmentSource of a registered capture (built once, used for every pose)."""
    from ..geometry.render import vertex_visibility
    from ..photo.texture import fit_texture

    mesh = build_image_mesh(prepared, capture.vertices, capture.K, capture.depth, spacing_px, smoothness)
    H, W = capture.color.shape[:2]
    cam = Camera(capture.K, np.eye(3), np.zeros(3), W, H)
    F = prepared.render_faces
    vis = vertex_visibility(capture.vertices, F, cam, get_renderer().render(capture.vertices, F, cam))
    appearance = fit_texture(prepared, capture.vertices, cam, capture.color, vis)
    view = render_pose(mesh, capture.color, np.eye(3))
    source_depth = view.depth
    # the background without the head: the source with the head (and a margin) inpainted, once per capture
    import cv2

    head_px = view.covered & mesh.rigid[mesh.F].all(1)[np.maximum(view.triangle_id, 0)]
    grow = np.ones((2 * PLATE_MARGIN_PX + 1,) * 2, np.uint8)
    plate = cv2.inpaint(capture.color, cv2.dilate(head_px.astype(np.uint8), grow), 5, cv2.INPAINT_TELEA)
    cos = source_cosines(mesh)
    front = np.zeros(len(mesh.F), bool)
    in_front = np.isin(mesh.face_vertices, prepared.model.region(prepared.model.front_region()))
    front[:mesh.n_face_triangles] = in_front[mesh.F[:mesh.n_face_triangles]].all(1)
    fill, mirrored = fill_colors(prepared, mesh, capture.color, source_depth, appearance)
    # what is redrawn where unseen: the front of the face, and the rest of the face area where the mirror side
    # was seen (the other temple, cheek, ear); the rest of the head is inpainted
    fillable = front.copy()
    fillable[:mesh.n_face_triangles] |= mirrored[mesh.F[:mesh.n_face_triangles]].all(1)
    # (and redrawn when seen too obliquely; the rest of the head, stretched, still looks like the person's
    # hair, where an inpainting would not)
    thin = rubber_sheets(mesh) | (fillable & (cos > 0) & (cos < GRAZING_COS))
    return AugmentSource(capture, mesh, source_depth, plate, cos > 0, mesh.rigid[mesh.F].all(1), fillable, thin,
                         image_areas(mesh.source_px, mesh.F), fill)


def fill_colors(prepared, mesh: ImageMesh, color, source_depth, appearance):
    """The colour each face vertex gets where the source did not see it, under the source's light (which
    turns with the head, as the seen pixels' shading does): the source's colour at its mirror vertex (the
    face's symmetry), relit by the ratio of the SH shading at the two, where the source saw the mirror
    vertex within ~66° of square on (MIRROR_MIN_COS); else the fitted albedo under the fitted SH light.
    Returns ((n_face_vertices, 3) in [0, 1], (n_face_vertices,) bool: from the mirror)."""
    from ..geometry.mesh import vertex_normals
    from ..geometry.render import depth_visible
    from ..photo.texture import sample_image, sh_basis

    nv = mesh.n_face_vertices
    Vf, Ff = mesh.X[:nv], mesh.F[:mesh.n_face_triangles]
    normals = vertex_normals(Vf, Ff)
    shade = np.clip(sh_basis(normals) @ np.asarray(appearance.sh, float), 1e-3, None)  # (nv, 3)
    out = np.clip(appearance.albedo[mesh.face_vertices] * shade, 0, 1)
    # the mirror of each face vertex, among the face vertices
    local = -np.ones(prepared.model.n_vertices, np.int64)
    local[mesh.face_vertices] = np.arange(nv)
    i, j = prepared.mirror_pairs("face")
    mirror = -np.ones(nv, np.int64)
    ok = (local[i] >= 0) & (local[j] >= 0)
    mirror[local[i[ok]]] = local[j[ok]]
    W, H = mesh.size
    z = Vf[:, 2]
    cos = (normals * -Vf).sum(1) / np.linalg.norm(Vf, axis=1)
    seen = (cos > MIRROR_MIN_COS) & depth_visible(np.clip(mesh.source_px[:nv], 0, [W - 1, H - 1]), z, source_depth,
                                                   np.maximum(2.0, 0.005 * z), window=1)
    use = (mirror >= 0) & seen[np.maximum(mirror, 0)]
    m = mirror[use]
    observed = sample_image(np.asarray(color, np.float32) / 255.0, mesh.source_px[m])[:, :3]
    out[use] = np.clip(observed * shade[use] / shade[m], 0, 1)
    return out, use


def head_rotation(yaw_deg, pitch_deg, roll_deg=0.0):
    """(3, 3) the rotation, in the (OpenCV) camera frame, that turns a head by yaw (nose to the image's
    right for yaw > 0) and pitch (nose up for pitch > 0) about the camera's axes."""
    return MODEL_TO_OPENCV @ rotation_matrix(yaw_deg, pitch_deg, roll_deg) @ MODEL_TO_OPENCV


@dataclass
class Sample:
    image: np.ndarray             # (H, W, 3) uint8
    invented: np.ndarray          # (H, W) bool: filled pixels (the source did not see them)
    yaw_delta: float              # the requested head rotation, degrees
    pitch_delta: float
    K: np.ndarray                 # (3, 3)
    R: np.ndarray                 # (3, 3) model -> sample camera
    t: np.ndarray                 # (3,) mm
    scale: float
    source_to_sample: np.ndarray  # (4, 4)
    angles: tuple                 # (yaw, pitch, roll) degrees of the face in the sample
    landmarks_478: np.ndarray     # (478, 2) px
    visible_478: np.ndarray       # (478,) bool
    landmarks_68: np.ndarray      # (68, 2) px
    visible_68: np.ndarray        # (68,) bool
    landmarks_478_3d: np.ndarray  # (478, 3) mm, sample camera frame
    face_box: tuple               # (x0, y0, x1, y1) px


def synthesize(prepared, source: AugmentSource, yaw_deg, pitch_deg) -> Sample:
    """The sample of `source` with the head turned by yaw_deg and pitch_deg (degrees, about the face
    centre): the image, what was invented, and the labels (see the module docstring)."""
    import cv2

    if abs(pitch_deg) > MAX_PITCH_DEG or abs(yaw_deg) > 90:
        raise InputError(f"yaw {yaw_deg} / pitch {pitch_deg}: give |yaw| <= 90 and |pitch| <= {MAX_PITCH_DEG} "
                         f"degrees")
    mesh, cap = source.mesh, source.capture
    W, H = mesh.size
    R_head = head_rotation(yaw_deg, pitch_deg)
    view = render_pose(mesh, cap.color, R_head)
    img, covered, tri = view.image, view.covered, view.triangle_id
    nf = mesh.n_face_triangles
    uv = mesh.camera.pixels(view.vertices)
    stretched = source.thin & (image_areas(uv, mesh.F) > SHEET_STRETCH * np.maximum(source.source_areas, 0.5))
    unseen = covered & ~seen_pixels(mesh, view, source.source_depth, source.facing)
    unseen[covered] |= stretched[tri[covered]]
    face_px = covered & (tri >= 0) & (tri < nf)
    front_px = covered & source.fillable[np.maximum(tri, 0)]
    face_unseen = unseen & front_px  # the face that can be redrawn (the person's own colours or albedo)
    if face_unseen.any():
        Vf, Ff = view.vertices[:mesh.n_face_vertices], mesh.F[:nf]
        r = get_renderer().render(Vf, Ff, mesh.camera, vertex_colors=source.fill,
                                  ambient=1.0, diffuse=0.0, maps=("color",))
        model_img = r.color_uint8()
        region = cv2.dilate(face_unseen.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & front_px
        mask8 = region.astype(np.uint8) * 255
        ys, xs = np.nonzero(mask8)
        if 2 <= ys.min() and ys.max() < H - 2 and 2 <= xs.min() and xs.max() < W - 2:
            center = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
            cloned = cv2.seamlessClone(model_img, img, mask8, center, cv2.NORMAL_CLONE)
            img[region] = cloned[region]  # OpenCV's solve also shifts pixels around the region: keep them
        else:  # Poisson editing needs a border around the region: paste where it touches the image's edge
            img[region] = model_img[region]
    on_head = covered & source.head_triangles[np.maximum(tri, 0)]
    revealed = (unseen & ~on_head) | ~covered
    img[revealed] = source.plate[revealed]  # the background stays: what the head uncovers is the plate there
    head_holes = unseen & on_head & ~front_px  # the rest of the head (hair, ears, temples, neck): inpainted
    if head_holes.any():
        img = cv2.inpaint(img, head_holes.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    invented = revealed | head_holes
    if face_unseen.any():
        invented |= region  # Poisson editing changes the whole region it blends, a ring of seen pixels too
    return _with_labels(prepared, source, view, R_head, img, invented, face_px, yaw_deg, pitch_deg)


def _with_labels(prepared, source, view, R_head, img, invented, face_px, yaw_deg, pitch_deg):
    from ..detection.landmarks import to_68

    cap, mesh = source.capture, source.mesh
    W, H = mesh.size
    c = mesh.face_center
    R = R_head @ cap.R
    t = R_head @ (cap.t - c) + c
    angles = angles_of_rotation(R)
    V = cap.vertices @ R_head.T + (c - R_head @ c)
    L478 = prepared.embedding.points(V, prepared.model.faces, yaw_deg=angles[0])
    L68 = to_68(L478)

    def project(P):
        uv = mesh.camera.pixels(P)
        inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5)
        vis = inside & depth_visible(uv, P[:, 2], view.depth, np.maximum(3.0, 0.006 * P[:, 2]), window=1)
        return uv, vis

    uv478, vis478 = project(L478)
    uv68, vis68 = project(L68)
    ys, xs = np.nonzero(face_px)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if len(xs) else (0.0,) * 4
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_head, c - R_head @ c
    return Sample(img, invented, float(yaw_deg), float(pitch_deg), mesh.camera.K.copy(), R, t, float(cap.scale), T, angles,
                  uv478, vis478, uv68, vis68, L478, box)
