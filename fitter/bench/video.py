"""Video benchmark: the mini MICC dataset (fitter.bench.micc_mini, 10-second 25 fps 640×480 videos) —
accuracy of the video reconstruction against the average single-frame fit and the mean face (MICC
protocol; vertex error on the synthetic identity), time per video by step, and the batch's throughput
with 1 and 2 local workers and through a `dask scheduler` + `dask worker` processes."""
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..batch import SINGLE_THREAD_ENV
from ..datasets.micc import SETTINGS, find_layout, load_scans, run_micc, score_against_scans
from ..geometry.camera import Camera
from ..photo.coarse import fit_landmarks
from ..prepared import PreparedModel
from ..video import reconstruct_video
from .common import dask_processes, face_error
from .micc_mini import build_mini_micc


def scans_of(root, subject):
    """The subject's frontal scans, read once (fitter.datasets.micc.load_scans)."""
    base = Path(root) / subject / "Model"
    return load_scans([{"name": k, "path": str(next((base / k / "obj").glob("*.obj"))),
                        "landmarks": str(Path(root) / "gt_landmarks" / subject / f"{k}.ljson")}
                       for k in ("frontal1", "frontal2") if (base / k / "obj").is_dir()])


def accuracy_and_speed(prepared, root, truth, log=print):
    """Per video: MICC error (mean, symmetric) of the joint fit (its video_shape: the identity at the median
    of the frames' expressions; and its neutral identity), the average single-frame fit of the same kept
    frames (each with its own expression) and the mean face; vertex error of the identity for the
    synthetic subject; the times by step."""
    model = prepared.model
    zero = np.zeros(model.n_expression)
    reconstruct_video(prepared, Path(root) / next(iter(truth)) / "Video" / f"{SETTINGS[0]}.mjpg")  # warm-up
    rows = []
    for sid, t in truth.items():
        if t["kind"] not in ("scan", "synthetic"):
            continue
        scans = scans_of(root, sid)
        mean_face = score_against_scans(prepared, model.mean, scans)[1]
        for setting in SETTINGS:
            t0 = time.perf_counter()
            res = reconstruct_video(prepared, Path(root) / sid / "Video" / f"{setting}.mjpg")
            wall = time.perf_counter() - t0
            joint = score_against_scans(prepared, res.shape, scans)[1]
            joint_neutral = score_against_scans(prepared, res.neutral, scans)[1]
            singles = []
            for v in res.kept_views:  # each kept frame fitted alone: its shape with its own expression
                fit = fit_landmarks(prepared, [v.face.points], [Camera.for_image(*v.face.image_size)], free_focal=True)
                V1 = model.shape(fit.identity, fit.images[0].expression)
                singles.append((score_against_scans(prepared, V1, scans[:1])[1], model.shape(fit.identity, zero)))
            row = {"subject": sid, "source": t.get("source", "synthetic"), "setting": setting,
                   "joint_mm": joint["mean_mm"], "joint_sym_mm": joint["symmetric_mean_mm"],
                   "joint_neutral_mm": joint_neutral["mean_mm"],
                   "single_mm": float(np.mean([s[0]["mean_mm"] for s in singles])),
                   "single_sym_mm": float(np.mean([s[0]["symmetric_mean_mm"] for s in singles])),
                   "mean_face_mm": mean_face["mean_mm"], "mean_face_sym_mm": mean_face["symmetric_mean_mm"],
                   "frames_scanned": len(res.records), "frames_kept": len(res.joint.kept),
                   "frames_dropped": len(res.joint.dropped), "seconds": wall,
                   **{k: v for k, v in res.times.items()}}
            if t["kind"] == "synthetic":
                V_true = model.shape(np.asarray(t["identity"]), zero)
                row.update(joint_vertex_mm=face_error(model, res.neutral, V_true),
                           single_vertex_mm=float(np.mean([face_error(model, s[1], V_true) for s in singles])),
                           best_single_vertex_mm=float(np.min([face_error(model, s[1], V_true) for s in singles])),
                           mean_face_vertex_mm=face_error(model, model.mean, V_true))
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            log(json.dumps(rows[-1]))
    return rows


def summarise(rows):
    out = {}
    for setting in SETTINGS:
        r = [x for x in rows if x["setting"] == setting]
        out[setting] = {k: round(float(np.mean([x[k] for x in r])), 3) for k in
                        ("joint_mm", "joint_neutral_mm", "single_mm", "mean_face_mm", "joint_sym_mm", "single_sym_mm", "mean_face_sym_mm",
                         "seconds", "decode_s", "detect_s", "joint_fit_s", "outputs_s", "frames_scanned",
                         "frames_kept")}
        out[setting]["joint_beats_single_on"] = f"{sum(x['joint_mm'] < x['single_mm'] for x in r)}/{len(r)}"
        out[setting]["joint_beats_mean_face_on"] = f"{sum(x['joint_mm'] < x['mean_face_mm'] for x in r)}/{len(r)}"
    return out


def batch_throughput(root, workers_list=(1, 2), log=print):
    """Wall time of `facefit micc` on the dataset per local worker count (fresh outputs each time), and
    the peak memory of the worker processes (from the done-markers)."""
    out = {}
    for n in workers_list:
        d = Path(tempfile.mkdtemp(prefix=f"micc_w{n}_"))
        t0 = time.perf_counter()
        summary, _ = run_micc(root, d, gt_dir=Path(root) / "gt_landmarks", workers=n, progress=False, log=lambda m: None)
        wall = time.perf_counter() - t0
        rss = [json.loads(p.read_text())["peak_rss_mb"] for p in d.glob("subject_*/*/DONE.json")]
        out[f"workers_{n}"] = {"seconds": round(wall, 2), "videos": len(summary.done), "failed": len(summary.failed),
                               "peak_rss_mb_per_worker": round(max(rss), 1) if rss else None}
        log(f"{n} workers: {out[f'workers_{n}']}")
        shutil.rmtree(d, ignore_errors=True)
    if len(workers_list) >= 2:
        a, b = workers_list[0], workers_list[1]
        out["throughput_ratio"] = round(out[f"workers_{a}"]["seconds"] / out[f"workers_{b}"]["seconds"], 3)
    return out


def dask_cluster_run(root, n_workers=2, log=print):
    """The same batch through a `dask scheduler` and `n_workers` `dask worker` processes started here
    (fitter.bench.common.dask_processes; one thread each, SINGLE_THREAD_ENV)."""
    tmp = Path(tempfile.mkdtemp(prefix="micc_dask_"))
    try:
        with dask_processes(n_workers, tmp, env=SINGLE_THREAD_ENV) as address:
            t0 = time.perf_counter()
            summary, _ = run_micc(root, tmp / "out", gt_dir=Path(root) / "gt_landmarks", scheduler=address,
                                  progress=False, log=lambda m: None)
            res = {"seconds": round(time.perf_counter() - t0, 2), "videos": len(summary.done),
                   "failed": len(summary.failed), "workers": summary.workers}
        log(f"dask scheduler + {n_workers} workers: {res}")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def video(name="ict", data_dir=None, root=None, seconds=10.0, fps=25.0, accuracy=True, batch=True, log=print):
    """The benchmark (its accuracy and speed part, its batch part, or both); `root`: where the mini dataset
    is (built there when it has no truth.json)."""
    prepared = PreparedModel.load(name)
    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="mini_micc_"))
    if (root / "truth.json").is_file():
        truth = json.loads((root / "truth.json").read_text())
    else:
        t0 = time.perf_counter()
        truth = build_mini_micc(root, prepared, data_dir, seconds=seconds, fps=fps, log=log)
        log(f"built the mini dataset in {time.perf_counter() - t0:.1f} s at {root}")
    res = {"dataset": {"root": str(root), "videos": sum(len(s.videos) for s in find_layout(root).subjects)}}
    if accuracy:
        rows = accuracy_and_speed(prepared, root, truth, log)
        res.update(per_video=rows, per_setting=summarise(rows))
    if batch:
        res["batch"] = batch_throughput(root, log=log)
        res["dask_processes"] = dask_cluster_run(root, log=log)
    return res
