"""Beyond landmarks, for the views of one person (`refine_views`: a MultiViewResult in, a new one out): the
model-space refinement (fitter.video.bundle) from tracks of skin points, then, where it was applied, the
multi-view medium stage (fitter.video.sweep), each behind its gate; what each did, or why it declined, is
recorded in the result's `refinement` (params.json's "refinement").
"""
import time
from dataclasses import replace

import numpy as np

from ..errors import InputError
from ..photo.coarse import landmark_error
from .bundle import MIN_PHOTO_TRACKS, MIN_TRACKS, BundleView, bundle_adjust
from .flow import empty_observations, follow_skin_points
from .frames import read_frames
from .outputs import MultiViewResult
from .sweep import MIN_CONFIDENT_FRACTION, medium_stage


def refine_views(prepared, res: MultiViewResult, shared_focal=True, medium=True, min_tracks=None,
                 min_confident=MIN_CONFIDENT_FRACTION, follow=True, wide=True):
    """Beyond landmarks: the model-space refinement (fitter.video.bundle: identity, poses and a
    shared focal from tracks of skin points: SIFT matches between the kept views; for a video, with
    `follow`, points followed through every frame between them (fitter.video.flow); for photos, with
    `wide`, model-guided matches between views far apart (fitter.video.wide)), then, where it was applied
    and `medium`, the multi-view medium stage (fitter.video.sweep: a plane sweep along the normals, the face
    area moved towards its confident offsets; one displacement for every view). Skipped, with the reason
    recorded, where the views give fewer than min_tracks tracks (None: MIN_TRACKS for a video,
    MIN_PHOTO_TRACKS for photos; too little surface texture), and the medium stage where the face is too
    small for its sweep or the sweep is confident on less than min_confident of the face area. Returns a new
    MultiViewResult: the refined identity, cameras, expressions and shapes, what was done (or why not) in its
    `refinement` and the stages' seconds in its `times`; `res` is left as it was. It runs before the merged
    texture and the contact sheet are made (`reconstruct_video(refine=...)`); a result whose outputs are made
    already keeps them as they were (the benchmarks compare shapes only)."""
    res = replace(res, refinement=dict(res.refinement), times=dict(res.times))
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
        return res
    fits = [_refitted(prepared, out.identity, im, cam, beta) for im, cam, beta in zip(fits, out.cameras, out.expressions)]
    expression = np.median(out.expressions, axis=0)
    res = replace(res, joint=replace(res.joint, fit=replace(res.joint.fit, identity=out.identity, images=fits)),
                  identity=out.identity, expression=expression,
                  neutral=model.shape(out.identity, np.zeros(model.n_expression)),
                  shape=model.shape(out.identity, expression))
    if not medium:
        res.refinement["medium"] = "off"
        return res
    t0 = time.perf_counter()
    D, res.refinement["medium"] = medium_stage(prepared, [v.image for v in kept], [im.camera for im in fits],
                                               res.identity, [im.expression for im in fits], min_confident=min_confident)
    res.times["medium_s"] = time.perf_counter() - t0
    return replace(res, neutral=res.neutral + D, shape=res.shape + D)


def _refitted(prepared, identity, im, camera, expression):
    """A fitted view's ImageFit at the refined identity, its refined camera and expression: its projected
    landmarks and landmark error measured again (as the joint fit measures them:
    fitter.photo.coarse.landmark_error)."""
    fitted_2d, error_px, error_iod = landmark_error(prepared.landmark_basis, identity, expression, camera,
                                                    im.landmarks_2d)
    return replace(im, camera=camera, expression=expression, fitted_2d=fitted_2d, error_px=error_px,
                   error_iod=error_iod)
