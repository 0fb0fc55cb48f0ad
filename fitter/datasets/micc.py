"""The MICC Florence 3D Faces dataset: its layout, one video's reconstruction and score (a batch task),
and the report.

Layout (the extension of the videos varies between copies):
    ROOT/subject_XX/Video/<Setting>.mjpg|.mjpeg|.mpg|.avi|.mp4   Setting: Indoor-Cooperative, PTZ-Indoor, PTZ-Outdoor
    ROOT/subject_XX/Model/frontal1/obj/*.obj, ROOT/subject_XX/Model/frontal2/obj/*.obj
Anything missing is reported, not fatal. Ground-truth landmarks (optional, `--gt-landmarks DIR`): 68 iBUG
points per scan in GANFit's `.ljson` ({"landmarks": {"points": [[x, y, z], ...]}}), found as
DIR/subject_XX/frontalK.ljson or DIR/<scan file stem>.ljson; without them the scan's nose tip and
alignment points are found by rendering and detection (as `facefit eval` does).

Protocol (fitter.registration.evaluate): 95 mm crop around the scan's nose tip, similarity ICP, point-to-surface
distance from the scan to the reconstruction's outer skin (mean and RMSE) and the symmetric mean; per
video the minimum over the subject's frontal scans (by the mean).
"""
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

SETTINGS = ("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor")
VIDEO_EXTENSIONS = (".mjpg", ".mjpeg", ".mpg", ".mpeg", ".avi", ".mp4")
CROP_MM = 95.0
DISTANCE_COLOUR_MAX_MM = 4.0

# Published MICC results (DESIGN.md, the seeds): (method, protocol, {setting: (mean, std)}).
PUBLISHED = (
    ("Tran et al. (GANFit Table 1)", "symmetric", {"Indoor-Cooperative": (1.93, 0.27), "PTZ-Indoor": (2.02, 0.25),
                                                   "PTZ-Outdoor": (1.86, 0.23)}),
    ("Booth et al. (GANFit Table 1)", "symmetric", {"Indoor-Cooperative": (1.82, 0.29), "PTZ-Indoor": (1.85, 0.22),
                                                    "PTZ-Outdoor": (1.63, 0.16)}),
    ("Genova et al. (GANFit Table 1)", "symmetric", {"Indoor-Cooperative": (1.50, 0.13), "PTZ-Indoor": (1.50, 0.11),
                                                     "PTZ-Outdoor": (1.48, 0.11)}),
    ("GANFit (S4 Table 1)", "symmetric", {"Indoor-Cooperative": (0.95, 0.107), "PTZ-Indoor": (0.94, 0.106),
                                          "PTZ-Outdoor": (0.94, 0.106)}),
    ("Tran et al. (Deng Table 2)", "rmse", {"Indoor-Cooperative": (1.97, 0.49), "PTZ-Indoor": (2.03, 0.45),
                                            "PTZ-Outdoor": (1.93, 0.49)}),
    ("Genova et al. (Deng Table 2)", "rmse", {"Indoor-Cooperative": (1.78, 0.54), "PTZ-Indoor": (1.78, 0.52),
                                              "PTZ-Outdoor": (1.76, 0.54)}),
    ("Deng et al. (S3 Table 2)", "rmse", {"Indoor-Cooperative": (1.66, 0.52), "PTZ-Indoor": (1.66, 0.46),
                                          "PTZ-Outdoor": (1.69, 0.53)}),
    ("Multiscale details (S2 Table 1)", "rmse", {"Indoor-Cooperative": (1.59, 0.37), "PTZ-Indoor": (1.55, 0.43),
                                                 "PTZ-Outdoor": (1.61, 0.28)}),
)
PROTOCOL_NOTES = {
    "symmetric": "GANFit's protocol: 68 hand-placed scan landmarks, 95 mm crop around landmark 30, ICP with "
                 "scale, mean closest-point distance both ways averaged, min over frontal1/frontal2, 5 random "
                 "frames per video fitted jointly",
    "rmse": "Deng et al.'s protocol: RMSE of the point-to-plane distance over the 95 mm crop with the forehead "
            "removed, ICP with scale per mesh; published video results average per-frame predictions",
}


@dataclass
class MiccSubject:
    id: str
    videos: dict = field(default_factory=dict)   # setting -> Path
    scans: dict = field(default_factory=dict)    # "frontal1"/"frontal2" -> Path (the first .obj there)


@dataclass
class MiccLayout:
    root: Path
    subjects: list                                 # MiccSubject with at least one video
    problems: list = field(default_factory=list)   # (subject, setting or "", reason)


def find_layout(root, settings=SETTINGS, subjects=None):
    """The subjects, videos and frontal scans under `root`; what is missing goes to `problems`.
    Raises InputError when `root` holds no subject_* folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder (give the MICC root, the folder holding subject_XX/)")
    for s in settings:
        if s not in SETTINGS:
            raise InputError(f"unknown MICC setting '{s}' (available: {', '.join(SETTINGS)})")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("subject_"))
    if not folders:
        raise InputError(f"{root} holds no subject_XX folders (the MICC layout: subject_XX/Video, subject_XX/Model)")
    problems = []
    if subjects:
        try:
            wanted = list(dict.fromkeys(subject_name(s) for s in subjects))
        except ValueError as e:
            raise InputError(str(e)) from None
        missing = [m for m in wanted if m not in {p.name for p in folders}]
        if len(missing) == len(wanted):
            held = ", ".join(p.name for p in folders[:6]) + (", ..." if len(folders) > 6 else "")
            raise InputError(f"{root} has no {', '.join(missing)} (it holds {held})")
        folders = [p for p in folders if p.name in wanted]
        problems = [(m, "", f"no {m} folder in {root}") for m in missing]
    out = []
    for p in folders:
        subj = MiccSubject(p.name)
        for s in settings:
            found = [f for f in sorted((p / "Video").glob(f"{s}.*")) if f.suffix.lower() in VIDEO_EXTENSIONS]
            if found:
                subj.videos[s] = found[0]
            else:
                problems.append((p.name, s, f"no {s} video in {p.name}/Video"))
        for k in ("frontal1", "frontal2"):
            objs = sorted((p / "Model" / k / "obj").glob("*.obj"))
            if objs:
                subj.scans[k] = objs[0]
        if subj.videos:
            out.append(subj)
    return MiccLayout(root, out, problems)


def subject_name(s):
    """'subject_XX' of a subject given as 12, '12' or 'subject_12'. Raises ValueError for anything else."""
    s = str(s).strip()
    if s.lower().startswith("subject_") and len(s) > len("subject_"):
        return "subject_" + s[len("subject_"):]
    if not s.isdigit():
        raise ValueError(f"'{s}' is not a subject (give its number, e.g. 12, or subject_12)")
    return f"subject_{int(s):02d}"


def find_gt_landmarks(gt_dir, subject, frontal, scan_path):
    """The .ljson of a scan in gt_dir (None when gt_dir is None or holds none for it)."""
    if gt_dir is None:
        return None
    for p in (Path(gt_dir) / subject / f"{frontal}.ljson", Path(gt_dir) / f"{Path(scan_path).stem}.ljson"):
        if p.is_file():
            return p
    return None


def read_ljson(path):
    """(68, 3) landmarks of a GANFit-style .ljson. Raises InputError."""
    try:
        P = np.asarray(json.loads(Path(path).read_text())["landmarks"]["points"], float)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a landmark file ({e})") from None
    if P.shape != (68, 3):
        raise InputError(f"{path}: expected 68 3D points, found {P.shape}")
    return P


def work_items(layout: MiccLayout, gt_dir=None, stride=None, per_bin=2, texture_size=512, refine=True, medium=True):
    """One batch WorkItem per video of a subject with scans; (items, failures) with failures as
    {item id: reason} for the videos that cannot be scored."""
    from ..batch import WorkItem

    items, failures = [], {}
    for subj in layout.subjects:
        for setting, video in subj.videos.items():
            item_id = f"{subj.id}/{setting}"
            if not subj.scans:
                failures[item_id] = (f"{subj.id} has no frontal scan (Model/frontal1/obj/*.obj or "
                                     f"Model/frontal2/obj/*.obj): nothing to score against")
                continue
            scans = []
            for k, p in subj.scans.items():
                gt = find_gt_landmarks(gt_dir, subj.id, k, p)
                scans.append({"name": k, "path": str(p), "landmarks": str(gt) if gt else None})
            items.append(WorkItem(item_id, "fitter.datasets.micc:reconstruct_and_score",
                                  {"video": str(video), "subject": subj.id, "setting": setting, "scans": scans,
                                   "stride": stride, "per_bin": per_bin, "texture_size": texture_size,
                                   "refine": refine, "medium": medium}))
    return items, failures


def reconstruct_and_score(prepared, args, folder):
    """Batch task: reconstruct one MICC video into `folder` (fitter.video outputs) and score it against the
    subject's frontal scans; writes scores.json and distance.png; returns the row for results.csv."""
    from ..io import write_json_atomic
    from ..video import reconstruct_video, write_multiview

    res = reconstruct_video(prepared, args["video"], stride=args.get("stride"), per_bin=args.get("per_bin", 2),
                            texture_size=args.get("texture_size", 512), refine=args.get("refine", True),
                            medium=args.get("medium", True))
    write_multiview(res, prepared, folder)
    scans = load_scans(args["scans"])
    scores, best = score_against_scans(prepared, res.shape, scans)
    best_scan = [s for s in scans if s.name == best["name"]]
    neutral_scores, neutral = score_against_scans(prepared, res.neutral, best_scan)  # against the same scan
    write_json_atomic(Path(folder) / "scores.json", {"protocol": PROTOCOL_NOTES_OURS, "mesh": SCORED_MESH,
                                                      "per_scan": scores, "best": best["name"],
                                                      "neutral_per_scan": neutral_scores})
    write_distance_render(prepared, res.shape, best, Path(folder) / "distance.png")
    return {"subject": args["subject"], "setting": args["setting"], "mean_mm": best["mean_mm"],
            "rmse_mm": best["rmse_mm"], "symmetric_mean_mm": best["symmetric_mean_mm"], "best_scan": best["name"],
            "neutral_mean_mm": neutral["mean_mm"], "neutral_symmetric_mean_mm": neutral["symmetric_mean_mm"],
            "frames_scanned": len(res.records), "frames_kept": len(res.joint.kept),
            "frames_dropped": len(res.joint.dropped), "seconds": round(sum(res.times.values()), 3)}


SCORED_MESH = ("video_shape.obj: the identity at the median of the fitted frames' expressions (the face as the "
               "video shows it; published MICC results score their reconstructions with the fitted expression too); "
               "identity.obj (neutral) is scored as well: neutral_* columns")
PROTOCOL_NOTES_OURS = ("95 mm crop around the scan's nose tip, similarity ICP, point-to-surface distance from the "
                       "scan to the reconstruction's outer skin (mean, RMSE) and the symmetric mean of both "
                       "directions; the minimum over the frontal scans by the mean")


@dataclass
class ScoringScan:
    """A frontal scan read once for scoring: its mesh (mm) and its MICC reference points."""

    name: str
    path: str
    scan: object                 # fitter.registration.scan.Scan
    reference: tuple             # fitter.registration.evaluate.scan_reference: (nose tip, 5 points or None)
    nose_tip_from: str           # "landmarks" or "detected"


def load_scans(scans):
    """ScoringScans of {"name", "path", "landmarks" (a .ljson) or None} dicts."""
    from ..detection import landmarks as lmk
    from ..registration.evaluate import scan_reference
    from ..registration.scan import read_scan

    out = []
    for s in scans:
        scan = read_scan(s["path"], units="mm")
        gt = lmk.five_points(read_ljson(s["landmarks"])) if s.get("landmarks") else None
        out.append(ScoringScan(s["name"], s["path"], scan, scan_reference(scan, gt),
                               "landmarks" if gt is not None else "detected"))
    return out


def score_against_scans(prepared, V, scans):
    """MICC error of V (N, 3) against each ScoringScan; returns (per scan list, the best by mean_mm, with its
    transform and the scan kept for the distance render)."""
    from ..registration.evaluate import evaluate_mesh

    out, best = [], None
    for s in scans:
        r = evaluate_mesh(prepared, V, s.scan, crop_mm=CROP_MM, symmetric=True, keep_transform=True,
                          reference=s.reference)
        row = {"name": s.name, "path": s.path, "nose_tip_from": s.nose_tip_from,
               **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items() if k != "transform"}}
        out.append(row)
        if best is None or r["mean_mm"] < best["mean_mm"]:
            best = dict(row, transform=r["transform"], scan=s.scan)
    return out, best


def distance_colors(d):
    """(N, 3) float RGB in [0, 1] of distances d (N,) mm: turbo from 0 (blue) to DISTANCE_COLOUR_MAX_MM (red),
    grey where d is NaN (not scored)."""
    import matplotlib

    rgb = matplotlib.colormaps["turbo"](np.clip(np.nan_to_num(d) / DISTANCE_COLOUR_MAX_MM, 0, 1))[:, :3]
    rgb[~np.isfinite(d)] = 0.6
    return rgb


def write_distance_render(prepared, V, best, path):
    """A front render of V coloured by each outer-skin vertex's distance (mm) to the best scan's crop
    after the protocol's alignment (blue 0 → red DISTANCE_COLOUR_MAX_MM; grey: not scored), and the
    distances themselves beside it as distance.npz (`distance_mm` (N,) float32, NaN: not scored)."""
    from ..geometry.camera import look_at_face
    from ..geometry.closest import MeshQuery
    from ..geometry.draw import draw_text
    from ..geometry.render import get_renderer
    from ..io import save_npz_atomic, write_image_atomic
    from ..registration.evaluate import crop

    model = prepared.model
    T = best["transform"]
    Va = T["scale"] * V @ np.asarray(T["R"]).T + np.asarray(T["t"])
    scan = best["scan"]
    Vg, Fg = crop(scan.V, scan.F, best["nose_tip"], CROP_MM)
    skin = model.region_mask("outer_skin")
    d = np.full(len(V), np.nan)
    near = skin & (np.linalg.norm(Va - np.asarray(best["nose_tip"]), axis=1) <= CROP_MM)
    d[near] = MeshQuery(Vg, Fg).closest(Va[near]).distances
    save_npz_atomic(Path(path).with_name("distance.npz"), distance_mm=d.astype(np.float32))  # the report's 3-D view
    rgb = distance_colors(d)
    face = V[prepared.face_area.domain]
    cam = look_at_face(face.mean(0), 0.0, 0.0, 600.0, 1600.0, 512, 512)
    img = get_renderer().render(V, prepared.render_faces, cam, vertex_colors=rgb, light_dir=(0, 0, -1),
                                ambient=0.55, diffuse=0.45, background=(0.12, 0.12, 0.14)).color_uint8()
    img = draw_text(img, [f"{best['name']}: mean {best['mean_mm']:.2f} mm, RMSE {best['rmse_mm']:.2f} mm",
                          f"colour: 0 (blue) to {DISTANCE_COLOUR_MAX_MM:g} mm (red)"], scale=0.45)
    write_image_atomic(path, img)


# --- the report ----------------------------------------------------------------------------------
RESULT_COLUMNS = ("subject", "setting", "status", "mean_mm", "rmse_mm", "symmetric_mean_mm", "best_scan",
                  "neutral_mean_mm", "neutral_symmetric_mean_mm", "frames_scanned", "frames_kept", "frames_dropped", "seconds", "reason")


def result_rows(layout: MiccLayout, summary, failures):
    """results.csv's rows: one per video (scored or failed), then the videos the layout lacks."""
    rows = []
    for subj in layout.subjects:
        for setting in subj.videos:
            item_id = f"{subj.id}/{setting}"
            if item_id in summary.results:
                rows.append(dict(summary.results[item_id], status="done", reason=""))
            else:
                reason = failures.get(item_id) or summary.failed.get(item_id, "not run")
                rows.append({"subject": subj.id, "setting": setting, "status": "failed", "reason": reason})
    for subject, setting, reason in layout.problems:
        rows.append({"subject": subject, "setting": setting, "status": "missing", "reason": reason})
    return rows


def per_setting(rows, settings, key):
    out = {}
    for s in settings:
        v = [r[key] for r in rows if r["setting"] == s and r["status"] == "done"]
        out[s] = {"n": len(v), "mean": round(float(np.mean(v)), 4) if v else None,
                  "std": round(float(np.std(v)), 4) if v else None}
    return out


def write_report(layout, summary, failures, outdir, settings=SETTINGS):
    """results.csv, summary.json, summary.md and boxplot.png in `outdir`; returns summary.json's dict."""
    from ..io import write_json_atomic, write_text_atomic

    outdir = Path(outdir)
    rows = result_rows(layout, summary, failures)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    write_text_atomic(outdir / "results.csv", buf.getvalue())
    stats = {k: per_setting(rows, settings, k) for k in ("mean_mm", "rmse_mm", "symmetric_mean_mm", "neutral_mean_mm",
                                                         "neutral_symmetric_mean_mm")}
    doc = {"root": str(layout.root.resolve()), "settings": list(settings), "protocol": PROTOCOL_NOTES_OURS,
           "mesh": SCORED_MESH,
           "videos": {"done": sum(r["status"] == "done" for r in rows),
                      "failed": sum(r["status"] == "failed" for r in rows),
                      "missing": sum(r["status"] == "missing" for r in rows)},
           "per_setting": stats,
           "failures": [{"subject": r["subject"], "setting": r["setting"], "reason": r["reason"]}
                        for r in rows if r["status"] != "done"]}
    write_json_atomic(outdir / "summary.json", doc)
    write_text_atomic(outdir / "summary.md", _summary_md(doc, settings))
    _boxplot(rows, settings, outdir / "boxplot.png")
    return doc


def _fmt(s):
    return "–" if s["mean"] is None else f"{s['mean']:.2f} ± {s['std']:.2f} (n={s['n']})"


def _summary_md(doc, settings):
    head = "| method | protocol | " + " | ".join(settings) + " |\n|---|---|" + "---|" * len(settings) + "\n"
    ours = doc["per_setting"]
    lines = ["# MICC Florence: reconstruction error (mm, mean ± std over subjects)", "",
             f"Root: `{doc['root']}`. Videos scored: {doc['videos']['done']}, failed: {doc['videos']['failed']}, "
             f"missing: {doc['videos']['missing']}.", "", head.rstrip("\n")]
    lines.append("| facefit, symmetric mean | symmetric | " + " | ".join(_fmt(ours["symmetric_mean_mm"][s]) for s in settings) + " |")
    lines.append("| facefit, scan→recon mean | one-way mean | " + " | ".join(_fmt(ours["mean_mm"][s]) for s in settings) + " |")
    lines.append("| facefit, scan→recon RMSE | rmse | " + " | ".join(_fmt(ours["rmse_mm"][s]) for s in settings) + " |")
    lines.append("| facefit neutral identity, symmetric mean | symmetric | " + " | ".join(
        _fmt(ours["neutral_symmetric_mean_mm"][s]) for s in settings) + " |")
    for name, protocol, vals in PUBLISHED:
        lines.append(f"| {name} | {protocol} | " + " | ".join(
            f"{vals[s][0]:.2f} ± {vals[s][1]:.2f}" if s in vals else "–" for s in settings) + " |")
    lines += ["", "Protocols:", f"- facefit: {PROTOCOL_NOTES_OURS}; every video is reconstructed by a joint fit of "
              f"its best frames per yaw bin. Scored mesh: {SCORED_MESH}.", f"- symmetric: {PROTOCOL_NOTES['symmetric']}.",
              f"- rmse: {PROTOCOL_NOTES['rmse']}.",
              "- The published rows are the papers' numbers on the full MICC dataset (53 subjects); ours are on the "
              "root given above. Compare like with like: the symmetric rows with the symmetric row, RMSE with RMSE."]
    if doc["failures"]:
        lines += ["", "Not scored:"] + [f"- {f['subject']} {f['setting']}: {f['reason']}" for f in doc["failures"]]
    return "\n".join(lines) + "\n"


def _boxplot(rows, settings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import write_bytes_atomic

    data = [[r["symmetric_mean_mm"] for r in rows if r["setting"] == s and r["status"] == "done"] for s in settings]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.boxplot([d if d else [np.nan] for d in data], showmeans=True)
    ax.set_xticks(range(1, len(settings) + 1), [f"{s}\n(n={len(d)})" for s, d in zip(settings, data)])
    for k, d in enumerate(data, start=1):
        ax.scatter(np.full(len(d), k) + np.linspace(-0.08, 0.08, len(d)) if d else [], d, s=12, alpha=0.6)
    ax.set_ylabel("symmetric mean distance (mm)")
    ax.set_title("MICC protocol, per setting")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def run_micc(root, outdir, settings=SETTINGS, subjects=None, gt_dir=None, workers=None, scheduler=None,
             stride=None, per_bin=2, texture_size=512, model_name="ict", progress=True, log=print, refine=True,
             medium=True):
    """Reconstruct and score every MICC video under `root` through the batch engine into
    OUT/subject_XX/<Setting>/, then write the report (results.csv, summary.md/json, boxplot.png).
    Returns (BatchSummary, summary.json's dict)."""
    from ..batch import run_batch

    if gt_dir is not None and not Path(gt_dir).is_dir():
        raise InputError(f"{gt_dir} is not a folder of ground-truth landmarks")
    layout = find_layout(root, settings, subjects)
    for subject, setting, reason in layout.problems:
        log(f"facefit: warning: {reason}")
    items, failures = work_items(layout, gt_dir, stride, per_bin, texture_size, refine, medium)
    for item_id, reason in failures.items():
        log(f"facefit: warning: {item_id}: {reason}")
    summary = run_batch(items, outdir, model_name=model_name, workers=workers, scheduler=scheduler,
                        progress=progress, log=log, desc="videos")
    doc = write_report(layout, summary, failures, outdir, settings)
    return summary, doc
