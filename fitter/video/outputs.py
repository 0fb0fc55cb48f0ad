"""The result of a multi-view reconstruction and its files.

`write_multiview` writes OUT/<name>/: identity.obj (+ identity.mtl, texture.png; neutral expression,
model frame, mm), video_shape.obj (the identity at the median of the fitted views' expressions: the face
as the views show it, what `facefit micc` scores), params.json (identity, per view K/R/t/expression/
landmark error, every scanned frame's fate, what the refinement beyond landmarks did or why it declined
(fitter.video.refine), times) and frames.png (a contact sheet of the fitted views with their overlays),
each file atomically.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.camera import MODEL_TO_OPENCV, crop_image, square_box, yaw_of_rotation
from ..geometry.draw import contact_sheet, draw_points, draw_text
from ..geometry.mesh import write_obj
from ..geometry.render import get_renderer
from ..io import write_image_atomic, write_json_atomic
from ..photo.export import MESH_FORMATS, write_glb, write_ply, write_textured_obj
from ..photo.overlay import face_overlay
from ..photo.texture import merged_uv_texture
from .joint import JointFit
from .selection import FrameRecord
from .tracks import face_region_mask

SHEET_TILE_PX = 256
SHEET_COLUMNS = 6


@dataclass
class MultiViewResult:
    name: str                  # the output folder's name
    source: str                # the video, frame folder or first photo
    kind: str                  # "video" or "photos"
    records: list              # FrameRecord per scanned frame / photo, with its status
    views: list                # the FrameRecords given to the joint fit (kept and dropped), images held
    joint: JointFit
    identity: np.ndarray       # (P,) identity coefficients
    neutral: np.ndarray        # (N, 3) the identity at neutral expression, model frame, mm
    expression: np.ndarray     # (E,) the median of the fitted views' expressions
    shape: np.ndarray          # (N, 3) the identity at that expression, model frame, mm
    texture: np.ndarray = None  # (T, T, 3) uint8, merged from the kept views
    refinement: dict = field(default_factory=dict)  # what the model-space refinement and the medium stage did
    sheet: np.ndarray = None   # the contact sheet
    times: dict = field(default_factory=dict)

    @property
    def kept_views(self):
        return [self.views[i] for i in self.joint.kept]


def make_texture_and_sheet(prepared, res: MultiViewResult, texture_size):
    """The merged texture (kept views, each inside its face's landmark hull) and the contact sheet (every
    fitted view, dropped ones marked)."""
    model, F = prepared.model, prepared.render_faces
    tex_views, tiles = [], []
    fits = dict(zip(res.joint.kept, res.joint.fit.images))
    rounds = res.refinement.get("model_space", {}).get("rounds") or [{}]
    track_px = dict(zip(res.joint.kept, rounds[-1].get("per_view_error_px", [])))
    for j, v in enumerate(res.views):
        if j in fits:
            im = fits[j]
            V = model.shape(res.identity, im.expression)
            if model.uv is not None:
                tex_views.append((V, im.camera, v.image, get_renderer().render(V, F, im.camera).depth,
                                  face_region_mask(v.face.points, v.image.shape[:2])))
            tiles.append(_tile(prepared, v, V, im, track_px.get(j)))
        else:
            tiles.append(_tile(prepared, v, None, None))
    if tex_views:
        res.texture = merged_uv_texture(prepared, tex_views, size=texture_size)
    res.sheet = contact_sheet(tiles, SHEET_COLUMNS)


def _tile(prepared, v: FrameRecord, V, im, track_px=None):
    """One view's tile: the face crop with the fitted face and landmarks (fitted views) or the detected
    landmarks in red (dropped views), captioned (with the view's median track residual after the
    model-space refinement, where it ran)."""
    img = v.image
    radius = float(np.clip(v.face_px / 90.0, 0.8, 3.0))
    if im is not None:
        img = face_overlay(img, prepared, V, im.camera)
        img = draw_points(img, im.landmarks_2d, (60, 140, 255), radius=radius)
        img = draw_points(img, im.fitted_2d, (40, 230, 40), radius=radius)
        lines = [f"#{v.index}  yaw {yaw_of_rotation(im.camera.R):+.0f}", f"err {100 * im.error_iod:.1f}% IOD"]
        if track_px is not None:
            lines.append(f"tracks {track_px:.2f} px")
    else:
        img = draw_points(img, v.face.points, (230, 40, 40), radius=radius)
        lines = [f"#{v.index}  DROPPED", "another person?" if "identity" in v.reason else "residual outlier"]
    crop, _ = crop_image(img, square_box(v.face.points, 0.3, whole_pixels=True), SHEET_TILE_PX)
    return draw_text(crop, lines, scale=0.45)


def params_dict(res: MultiViewResult, prepared):
    """What params.json holds (see the module docstring)."""
    model = prepared.model
    fits = dict(zip(res.joint.kept, res.joint.fit.images))
    views = []
    for j, v in enumerate(res.views):
        d = v.to_dict()
        if j in fits:
            im = fits[j]
            d.update({"K": im.camera.K.round(6).tolist(), "R": im.camera.R.round(9).tolist(),
                      "t_mm": im.camera.t.round(6).tolist(), "image_size": [im.camera.width, im.camera.height],
                      "fitted_yaw_deg": round(yaw_of_rotation(im.camera.R), 3),
                      "expression": dict(zip(model.expression_names, im.expression.round(6).tolist())),
                      "landmark_error_px": round(im.error_px, 4), "landmark_error_iod": round(im.error_iod, 6)})
        views.append(d)
    counts = {}
    for r in res.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return {
        "source": str(Path(res.source).resolve()), "kind": res.kind,
        "model": {"name": model.name, "sha256": model.metadata.get("model_sha256")},
        "mesh": "identity.obj: the identity at neutral expression, in the model's frame, mm; video_shape.obj: "
                "the identity at the median expression of the fitted views; both with the medium stage's "
                "displacement where it ran (refinement.medium)",
        "identity": res.identity.round(6).tolist(),
        "median_expression": dict(zip(model.expression_names, res.expression.round(6).tolist())),
        "frames": {"scanned": len(res.records), "fitted": len(res.joint.kept), "dropped": len(res.joint.dropped),
                   "by_status": counts},
        "views": views,
        "scanned": [r.to_dict() for r in res.records],
        "joint_fit": {"rounds": res.joint.rounds, "history": res.joint.history,
                      "iterations": res.joint.fit.iterations, "shared_expression": res.joint.shared_expression},
        "refinement": res.refinement or {"model_space": "off"},
        "camera_convention": "OpenCV pinhole: x right, y down, z forward; K in the frame's pixels; R, t map the "
                             "model frame (mm) to the camera",
        "times_s": {k: round(v, 4) for k, v in res.times.items()},
    }


def write_multiview(res: MultiViewResult, prepared, folder, mesh_format="obj"):
    """Write the outputs into `folder` (OUT/<name>/ for the command; see the module docstring); returns it.
    mesh_format "glb" or "ply" also writes identity.glb / identity.ply (fitter.photo.export) beside identity.obj."""
    if mesh_format not in MESH_FORMATS:
        raise InputError(f"unknown mesh format '{mesh_format}' (available: {', '.join(MESH_FORMATS)})")
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise InputError(f"{d} exists and is not a folder: the outputs go there; move it or use another -o")
    model = prepared.model
    if res.texture is not None:
        write_textured_obj(d / "identity.obj", res.neutral, model, res.texture)
    else:
        write_obj(d / "identity.obj", res.neutral, model.faces)
    for fmt in ("glb", "ply"):
        if mesh_format == fmt and model.uv is not None:
            # identity.ply in identity.obj's model frame; write_glb takes OpenCV-frame vertices and turns them
            # to glTF's y-up frame, which is the model's own
            V = res.neutral @ MODEL_TO_OPENCV.T if fmt == "glb" else res.neutral
            (write_glb if fmt == "glb" else write_ply)(d / f"identity.{fmt}", V, model.faces, model.uv,
                                                        model.uv_faces, res.texture)
        else:  # a rerun in another format leaves no mesh of the earlier one
            (d / f"identity.{fmt}").unlink(missing_ok=True)
    write_obj(d / "video_shape.obj", res.shape, model.faces)
    write_image_atomic(d / "frames.png", res.sheet)
    write_json_atomic(d / "params.json", params_dict(res, prepared))
    return d
