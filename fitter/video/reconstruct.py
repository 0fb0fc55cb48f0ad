"""Multi-view reconstruction of one person: a video (frames scanned, followed, scored, selected) or a
few photos, fitted jointly (fitter.video.joint), refined beyond landmarks (fitter.video.refine), with a
texture merged from the kept views.

`reconstruct_video` and `reconstruct_photos` return a MultiViewResult (fitter.video.outputs), which
`write_multiview` writes; `video_task` is the batch task of `facefit video` and `facefit micc`.
"""
import time
from pathlib import Path

import numpy as np

from ..detection import landmarks as lmk
from ..errors import InputError, NoFaceError
from ..geometry.camera import Camera
from ..io import read_image
from .frames import read_frames
from .joint import fit_views
from .outputs import MultiViewResult, make_texture_and_sheet, write_multiview
from .refine import refine_views
from .selection import FrameRecord, Tracker, estimate_yaw, face_sharpness, release_images, select_frames


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
    from ..photo.pipeline import WorkingImage

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
    joint = fit_views(prepared, [v.face.points for v in views],
                      [Camera.for_image(*v.face.image_size, focal) for v in views], free_focal=focal is None,
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
        res = refine_views(prepared, res, shared_focal=kind == "video" and not focal, medium=medium)
    t0 = time.perf_counter()
    make_texture_and_sheet(prepared, res, texture_size)
    res.times["outputs_s"] = time.perf_counter() - t0
    return res


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
