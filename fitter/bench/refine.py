"""Beyond-landmarks benchmark (issue 16): the landmark joint fit → + the model-space refinement
(fitter.video.bundle) → + the multi-view medium stage (fitter.video.sweep), per setting.

- `textured_identity`: a random identity filmed turning under a fixed light (fitter.synthetic.
  textured_turntable), with skin texture ("noise") and without ("flat": shading only); exact truth, the
  landmarks the true ones plus 2 px noise. Vertex error of the identity (fitter.bench.common.face_error).
- `textured_video`: the same through the whole video path (detector landmarks, frame selection), with
  skin texture and with the painted albedo alone.
- `mini_micc`: the mini MICC videos (fitter.bench.micc_mini: scans with their own texture and painted
  in one skin tone, and the synthetic identity with the painted albedo): MICC error per setting with the
  default (the refinement applied only where the views give MIN_TRACKS tracks), and with the refinement
  forced (min_tracks 0), without and with the medium stage; time of each step.
"""
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..coarse import fit_landmarks
from ..datasets.micc import SETTINGS, score_against_scans
from ..prepared import PreparedModel
from ..synthetic import textured_turntable
from ..video import reconstruct_video
from ..video.bundle import MIN_TRACKS, BundleView, bundle_adjust
from ..video.reconstruct import refine_views
from ..video.sweep import medium_stage
from .common import face_error
from .video import _scans_of


def textured_identity(prepared, seeds=(1, 2, 3), textures=("noise", "flat"), log=print):
    model = prepared.model
    zero = np.zeros(model.n_expression)
    rows = []
    for texture in textures:
        for seed in seeds:
            alpha, V, views = textured_turntable(prepared, np.random.default_rng(seed), texture)
            fit = fit_landmarks(prepared, [u for _, _, u in views], [(c.width, c.height) for _, c, _ in views])
            row = {"texture": texture, "seed": seed, "landmarks_mm": face_error(model, model.shape(fit.identity, zero), V)}
            t0 = time.perf_counter()
            out = bundle_adjust(prepared, [BundleView(im, f.camera, f.expression, u)
                                           for (im, _, u), f in zip(views, fit.images)], fit.identity, min_tracks=0)
            row["refine_s"] = time.perf_counter() - t0
            row["tracks"] = out.info["rounds"][0]["tracks"]
            row["applied_by_default"] = row["tracks"] >= MIN_TRACKS
            row["refined_mm"] = face_error(model, model.shape(out.identity, zero), V)
            t0 = time.perf_counter()
            D, info = medium_stage(prepared, [im for im, _, _ in views], out.cameras, out.identity,
                                   [f.expression for f in fit.images], min_confident=0.0)
            row["medium_s"] = time.perf_counter() - t0
            row["medium_mm"] = face_error(model, model.shape(out.identity, zero) + D, V)
            row["confident_fraction"] = info["confident_fraction"]
            row["median_offset_mm"] = info["median_offset_mm"]
            row["medium_applied_by_default"] = info["applied"]
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            log(json.dumps(rows[-1]))
    return rows


def textured_video(prepared, seeds=(5, 6, 7), textures=("skin", "painted"), log=print):
    """The whole video path (detection, selection, joint fit) on frame folders of a random identity turning
    ±50° (21 frames; fitter.synthetic.textured_turntable) with skin texture and with the painted albedo
    alone: vertex error of the landmark joint fit, after the refinement ("refined": what `facefit video`
    gives) and after the medium stage ("full": with --medium), each as the gates decide ("default") and
    forced; time of each step."""
    import cv2

    model = prepared.model
    zero = np.zeros(model.n_expression)
    rows = []
    for texture in textures:
        for seed in seeds:
            _, V, views = textured_turntable(prepared, np.random.default_rng(seed), texture, yaws=np.linspace(-50, 50, 21))
            with tempfile.TemporaryDirectory() as d:
                for k, (image, _, _) in enumerate(views):
                    cv2.imwrite(str(Path(d) / f"frame_{k:03d}.png"), image[:, :, ::-1])
                t0 = time.perf_counter()
                base = reconstruct_video(prepared, d, stride=1, refine=False)
                row = {"texture": texture, "seed": seed, "landmarks_s": time.perf_counter() - t0,
                       "views": len(base.joint.kept), "landmarks_mm": face_error(model, base.neutral, V)}
            for name, kwargs in (("default", {}), ("forced", {"min_tracks": 0, "min_confident": 0.0})):
                res = copy.deepcopy(base)
                refine_views(prepared, res, medium=True, **kwargs)
                row[f"{name}_refined_mm"] = face_error(model, model.shape(res.identity, zero), V)
                row[f"{name}_full_mm"] = face_error(model, res.neutral, V)
                row[f"{name}_refine_s"] = res.times.get("refine_s", 0.0)
                row[f"{name}_medium_s"] = res.times.get("medium_s", 0.0)
                ms, med = res.refinement["model_space"], res.refinement["medium"]
                row[f"{name}_tracks"] = ms.get("tracks") if "tracks" in ms else ms["rounds"][0]["tracks"]
                row[f"{name}_applied"] = [ms["applied"], med.get("applied") if isinstance(med, dict) else False]
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            log(json.dumps(rows[-1]))
    return rows


def mini_micc(prepared, root, truth, log=print):
    model = prepared.model
    zero = np.zeros(model.n_expression)
    rows = []
    for sid, t in truth.items():
        if t["kind"] not in ("scan", "synthetic"):
            continue
        scans = _scans_of(root, sid)
        for setting in SETTINGS:
            t0 = time.perf_counter()
            base = reconstruct_video(prepared, Path(root) / sid / "Video" / f"{setting}.mjpg", refine=False)
            row = {"subject": sid, "source": t.get("source", "synthetic"), "setting": setting,
                   "landmarks_s": time.perf_counter() - t0,
                   "landmarks_mm": score_against_scans(prepared, base.shape, scans)[1]["mean_mm"]}
            V_true = model.shape(np.asarray(t["identity"]), zero) if t["kind"] == "synthetic" else None
            if V_true is not None:
                row["landmarks_vertex_mm"] = face_error(model, base.neutral, V_true)
            for name, min_tracks, medium in (("default", None, True), ("forced", 0, False),
                                             ("forced_medium", 0, True)):
                res = copy.deepcopy(base)
                kwargs = {} if min_tracks is None else {"min_tracks": min_tracks, "min_confident": 0.0}
                refine_views(prepared, res, shared_focal=True, medium=medium, **kwargs)  # "default": with --medium
                row[f"{name}_mm"] = score_against_scans(prepared, res.shape, scans)[1]["mean_mm"]
                row[f"{name}_refine_s"] = res.times.get("refine_s", 0.0)
                row[f"{name}_medium_s"] = res.times.get("medium_s", 0.0)
                if V_true is not None:
                    row[f"{name}_vertex_mm"] = face_error(model, res.neutral, V_true)
                if name == "default":
                    ms = res.refinement["model_space"]
                    row["tracks"] = ms.get("tracks", ms["rounds"][0]["tracks"] if ms.get("rounds") else None)
                    row["applied"] = ms["applied"]
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            log(json.dumps(rows[-1]))
    return rows


def refine_bench(name="ict", root=None, part="all", log=print):
    prepared = PreparedModel.load(name)
    out = {}
    if part in ("all", "synthetic"):
        out["textured_identity"] = textured_identity(prepared, log=log)
    if part in ("all", "video"):
        out["textured_video"] = textured_video(prepared, log=log)
    if part in ("all", "micc"):
        if root is None or not (Path(root) / "truth.json").is_file():
            raise FileNotFoundError("the mini MICC part needs --root, a folder made by `facefit bench video`")
        out["mini_micc"] = mini_micc(prepared, root, json.loads((Path(root) / "truth.json").read_text()), log=log)
    return out
