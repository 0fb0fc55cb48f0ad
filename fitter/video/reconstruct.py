"""Multi-view reconstruction of one person: a video (frames scanned, followed, scored, selected) or a
few photos, fitted jointly (fitter.video.joint), with a texture merged from the kept views.

`reconstruct_video` and `reconstruct_photos` return a MultiViewResult; `write_multiview` writes
OUT/<name>/: identity.obj (+ identity.mtl, texture.png; neutral expression, model frame, mm),
video_shape.obj (the identity at the median of the fitted views' expressions: the face as the views show
it, what `facefit micc` scores), params.json (identity, per view K/R/t/expression/landmark error, every scanned frame's
fate, what the refinement beyond landmarks did or why it declined (`refine_views`), times) and
frames.png (a contact sheet of the fitted views with their overlays), each file atomically.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import landmarks as lmk
from ..camera import MODEL_TO_OPENCV, crop_image, square_box, yaw_of_rotation
from ..coarse import landmark_error
from ..draw import contact_sheet, draw_points, draw_text
from ..errors import InputError, NoFaceError
from ..io import read_image, write_image_atomic, write_json_atomic
from ..export import MESH_FORMATS, write_glb, write_ply, write_textured_obj
from ..mesh import write_obj
from ..overlay import face_overlay
from ..render import get_renderer
from ..texture import merged_uv_texture
from .bundle import MIN_PHOTO_TRACKS, MIN_TRACKS, BundleView, bundle_adjust
from .tracks import face_region_mask
from .flow import empty_observations, follow_skin_points
from .frames import read_frames
from .joint import JointFit, fit_views
from .sweep import MIN_CONFIDENT_FRACTION, medium_stage
from .selection import FrameRecord, Tracker, estimate_yaw, face_sharpness, release_images, select_frames

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


def reconstruct_video(prepared, source, stride=None, per_bin=2, focal=None, texture_size=512, name=None,
                      refine=True, medium=True):
    """Reconstruct the person of a video file or frame folder. stride: scan every stride-th frame (None:
    about 6 per second); per_bin: frames kept per yaw bin; focal: px (None: estimated, one for the video);
    refine / medium: the model-space refinement and the multi-view medium stage (see `refine_views`).
    Raises InputError (unreadable source) or NoFaceError (no usable frame)."""
    times = {"decode_s": 0.0, "detect_s": 0.0}
    records, tracker = [], Tracker()
    frames = read_frames(source, stride)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        times["decode_s"] += time.perf_counter() - t0
        if frame is None:
            break
        t0 = time.perf_counter()
        r = FrameRecord(frame.index, frame.time_s)
        records.append(r)
        if frame.image is None:
            r.status, r.reason = "unreadable", frame.error
            times["detect_s"] += time.perf_counter() - t0
            continue
        try:
            faces = lmk.detect_landmarks(frame.image, all_faces=True, max_faces=4)
        except NoFaceError:
            faces = []
        face = tracker.update(faces)
        if not faces:
            r.status = "no face"
        elif face is None:
            r.status, r.reason = "other person", "every face is far from the face followed so far"
        else:
            _score(prepared, r, face, frame.image, focal)
            if len(records) % 8 == 0:
                release_images(records)
        times["detect_s"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    release_images(records)
    views = select_frames(records, per_bin=per_bin)
    times["select_s"] = time.perf_counter() - t0
    if not views:
        raise NoFaceError(f"{source}: no usable frame of a face ({_tally(records)})")
    name = name or Path(source).stem
    return _fit_and_finish(prepared, name, str(source), "video", records, views, focal, texture_size, times,
                           refine, medium)


def reconstruct_photos(prepared, paths, focal=None, texture_size=1024, name=None, refine=True, medium=True,
                       shared_expression=False):
    """Reconstruct one person from several photos (the largest face of each), fitted jointly; every photo
    with a face is a view (each with its own focal length). Raises InputError / NoFaceError."""
    from ..pipeline import WorkingImage

    if not paths:
        raise InputError("give at least one photo")
    times = {"decode_s": 0.0, "detect_s": 0.0, "select_s": 0.0}
    records = []
    for k, path in enumerate(paths):
        t0 = time.perf_counter()
        r = FrameRecord(k, 0.0, source=str(Path(path).resolve()))
        records.append(r)
        try:
            img = WorkingImage.of(read_image(path)).image  # large photos: their 4-megapixel copy
        except InputError as e:  # one photo's failure, recorded like a photo without a face
            r.status, r.reason = "unreadable", str(e)
            continue
        finally:
            times["decode_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            _score(prepared, r, lmk.detect_landmarks(img)[0], img, focal)
            r.status = "kept"
        except NoFaceError:
            r.status = "no face"
        times["detect_s"] += time.perf_counter() - t0
    views = [r for r in records if r.status == "kept"]
    if not views:
        raise NoFaceError(f"no face found in any of the {len(paths)} photos ({_tally(records)})")
    name = name or f"{Path(paths[0]).stem}_joint"
    return _fit_and_finish(prepared, name, str(paths[0]), "photos", records, views, focal, texture_size, times,
                           refine, medium, shared_expression)


def _score(prepared, r: FrameRecord, face, image, focal):
    r.status, r.face, r.image = "candidate", face, image
    r.sharpness = face_sharpness(image, face)
    r.face_px = face.interocular()
    r.yaw_deg = estimate_yaw(prepared, face.points, face.image_size, focal)


def _tally(records):
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return f"{len(records)} frames scanned: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def _fit_and_finish(prepared, name, source, kind, records, views, focal, texture_size, times, refine=True,
                    medium=True, shared_expression=False):
    joint = fit_views(prepared, [v.face.points for v in views], [v.face.image_size for v in views], focal=focal,
                      shared_expression=shared_expression)
    times["joint_fit_s"] = joint.seconds
    for j, reason in joint.dropped.items():
        views[j].status, views[j].reason = "dropped", reason
    model = prepared.model
    alpha = joint.fit.identity
    beta = np.median([im.expression for im in joint.fit.images], axis=0)
    res = MultiViewResult(name, source, kind, records, views, joint, alpha,
                          model.shape(alpha, np.zeros(model.n_expression)), beta, model.shape(alpha, beta), times=times)
    if refine:
        refine_views(prepared, res, shared_focal=kind == "video" and not focal, medium=medium)
    t0 = time.perf_counter()
    _texture_and_sheet(prepared, res, texture_size)
    times["outputs_s"] = time.perf_counter() - t0
    return res


def refine_views(prepared, res: MultiViewResult, shared_focal=True, medium=True, min_tracks=None,
                 min_confident=MIN_CONFIDENT_FRACTION, follow=True, wide=True):
    """Beyond landmarks (in place): the model-space refinement (fitter.video.bundle: identity, poses and a
    shared focal from tracks of skin points: SIFT matches between the kept views; for a video, with
    `follow`, points followed through every frame between them (fitter.video.flow); for photos, with
    `wide`, model-guided matches between views far apart (fitter.video.wide)), then, where it was applied
    and `medium`, the multi-view medium stage (fitter.video.sweep: a plane sweep along the normals, the face
    area moved towards its confident offsets; one displacement for every view). Skipped, with the reason
    recorded, where the views give fewer than min_tracks tracks (None: MIN_TRACKS for a video,
    MIN_PHOTO_TRACKS for photos; too little surface texture), and the medium stage where the face is too
    small for its sweep or the sweep is confident on less than min_confident of the face area. Records what it did in res.refinement. It runs
    before the merged texture and the contact sheet are made (`reconstruct_video(refine=...)`); a result
    whose outputs are made already keeps them as they were (the benchmarks compare shapes only)."""
    model, fits = prepared.model, res.joint.fit.images
    kept = res.kept_views
    views = [BundleView(v.image, im.camera, im.expression, v.face.points) for v, im in zip(kept, fits)]
    if min_tracks is None:
        min_tracks = MIN_PHOTO_TRACKS if res.kind == "photos" else MIN_TRACKS
    flow = None
    if res.kind == "video" and follow:
        t0 = time.perf_counter()
        scanned = [(r.index, r.face.points) for r in res.records if r.face is not None]
        try:
            flow = follow_skin_points(prepared, read_frames(res.source, stride=1),
                                      [(v.index, b) for v, b in zip(kept, views)], scanned, res.identity)
        except InputError as e:  # the source could not be read a second time: SIFT tracks only
            flow = empty_observations({"frames_followed": 0, "reason": str(e)})
        res.times["flow_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = bundle_adjust(prepared, views, res.identity, shared_focal=shared_focal, min_tracks=min_tracks, flow=flow,
                        wide=res.kind == "photos" and wide)
    res.times["refine_s"] = time.perf_counter() - t0
    info = {k: v for k, v in out.info.items() if k != "seconds"}
    if flow is not None:
        info["flow"] = flow.info
    res.refinement["model_space"] = info
    if not out.info["applied"]:
        res.refinement["medium"] = "not run: it needs the refined cameras"
        return
    for im, cam, beta in zip(fits, out.cameras, out.expressions):
        im.camera, im.expression = cam, beta
    res.identity = out.identity
    res.expression = np.median(out.expressions, axis=0)
    res.joint.fit.identity = out.identity
    _update_landmark_errors(prepared, res)
    res.neutral = model.shape(res.identity, np.zeros(model.n_expression))
    res.shape = model.shape(res.identity, res.expression)
    if not medium:
        res.refinement["medium"] = "off"
        return
    t0 = time.perf_counter()
    D, res.refinement["medium"] = medium_stage(prepared, [v.image for v in kept], [im.camera for im in fits],
                                               res.identity, [im.expression for im in fits], min_confident=min_confident)
    res.neutral = res.neutral + D
    res.shape = res.shape + D
    res.times["medium_s"] = time.perf_counter() - t0


def _update_landmark_errors(prepared, res: MultiViewResult):
    """Each fitted view's projected landmarks and landmark error at the refined identity, expression and
    camera (as the joint fit measures them: fitter.coarse.landmark_error)."""
    for im in res.joint.fit.images:
        im.fitted_2d, im.error_px, im.error_iod = landmark_error(prepared.landmark_basis, res.identity, im.expression,
                                                                 im.camera, im.landmarks_2d)


def _texture_and_sheet(prepared, res: MultiViewResult, texture_size):
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
    mesh_format "glb" or "ply" also writes identity.glb / identity.ply (fitter.export) beside identity.obj."""
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


def video_task(prepared, args, folder):
    """Batch task (fitter.batch): reconstruct args["video"] into `folder`; returns a summary row."""
    res = reconstruct_video(prepared, args["video"], stride=args.get("stride"), per_bin=args.get("per_bin", 2),
                            focal=args.get("focal"), texture_size=args.get("texture_size", 512),
                            refine=args.get("refine", True), medium=args.get("medium", True))
    write_multiview(res, prepared, folder, args.get("mesh_format", "obj"))
    return {"video": args["video"], "frames_scanned": len(res.records), "frames_kept": len(res.joint.kept),
            "frames_dropped": len(res.joint.dropped),
            "landmark_error_iod": round(float(np.median([im.error_iod for im in res.joint.fit.images])), 5),
            "times_s": {k: round(v, 3) for k, v in res.times.items()}}
