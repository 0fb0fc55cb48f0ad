"""`facefit video`, `facefit micc` and `facefit report`: videos and the MICC Florence evaluation on the batch
engine (fitter.video, fitter.datasets.micc, fitter.batch), and the batch report (fitter.report)."""
import json
import sys
from pathlib import Path

import click

from .common import (as_usage_error, batch_exit, batch_options, check_focal_option, comma_list, model_option,
                     refine_options, stderr, write_batch_report)


@click.command("video")
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Output folder: OUTDIR/<video name>/ per video.")
@model_option
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Scan every N-th frame (default: about 6 frames per second of video).")
@click.option("--per-bin", type=click.IntRange(min=1), default=2, show_default=True,
              help="Frames kept per yaw bin (9 bins, edges ±10/30/50/70°).")
@click.option("--focal", type=float, default=None, callback=as_usage_error(check_focal_option),
              help="Focal length in pixels, > 0 (default: estimated).")
@click.option("--texture-size", default=512, show_default=True, type=click.IntRange(64, 8192),
              help="UV texture size in pixels (64-8192).")
@click.option("--mesh-format", type=click.Choice(["obj", "glb", "ply"]), default="obj", show_default=True,
              help="Also write identity.glb (glTF binary, textured, y up) or identity.ply beside identity.obj.")
@refine_options
@batch_options
@click.option("--json", "as_json", is_flag=True, help="Print a one-line JSON summary per video.")
def video_cmd(videos, outdir, model_name, stride, per_bin, focal, texture_size, mesh_format, refine, medium, workers,
              scheduler, as_json):
    """Reconstruct the person of each video (file or folder of frames; one person per video): the best
    frames per head yaw are fitted jointly. Writes OUTDIR/<name>/identity.obj (+ texture.png),
    params.json and frames.png. Videos run through the batch engine: resumable, failures recorded."""
    from fitter.batch import WorkItem, run_batch
    from fitter.video.frames import VIDEO_EXTENSIONS, is_video_source

    items, names, seen = [], set(), set()
    for v in videos:  # a missing file is the batch's to record; a photo given here is a usage error
        if Path(v).exists() and not is_video_source(v):
            raise click.UsageError(f"{v} is neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of frames")
        resolved = str(Path(v).resolve())
        if resolved in seen:
            stderr(f"facefit: warning: {v} is given more than once: reconstructed once")
            continue
        seen.add(resolved)
        name, k = Path(v).stem, 2
        while name in names:  # two videos of one name in different folders: name_2, name_3, ...
            name, k = f"{Path(v).stem}_{k}", k + 1
        names.add(name)
        items.append(WorkItem(name, "fitter.video.reconstruct:video_task",
                              {"video": resolved, "stride": stride, "per_bin": per_bin, "focal": focal,
                               "texture_size": texture_size, "refine": refine, "medium": medium,
                               "mesh_format": mesh_format}))
    summary = run_batch(items, outdir, model_name=model_name, workers=workers, scheduler=scheduler,
                        progress=not as_json, desc="videos", log=stderr)
    write_batch_report(outdir, as_json)
    for it in items:
        if it.id in summary.results:
            r = summary.results[it.id]
            click.echo(json.dumps(dict(r, ok=True, output=str(Path(outdir) / it.id))) if as_json else
                       f"{it.args['video']} -> {Path(outdir) / it.id} ({r['frames_kept']} of {r['frames_scanned']} "
                       f"scanned frames fitted, {r['frames_dropped']} dropped)")
        elif as_json:
            click.echo(json.dumps({"video": it.args["video"], "ok": False, "error": summary.failed.get(it.id)}))
    batch_exit(summary, len(items))


@click.command("micc")
@click.argument("root", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Output folder: OUTDIR/subject_XX/<Setting>/ per video, results.csv, summary.md/json, "
                   "boxplot.png.")
@click.option("--settings", default=",".join(("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor")), show_default=True,
              help="Comma-separated settings to run.")
@click.option("--subjects", default=None, help="Comma-separated subjects (12 or subject_12; default: all).")
@click.option("--gt-landmarks", "gt_dir", type=click.Path(), default=None,
              help="Folder of 68-point .ljson per scan (DIR/subject_XX/frontal1.ljson or DIR/<scan stem>.ljson); "
                   "default: the nose tip is found by detection.")
@click.option("--stride", type=click.IntRange(min=1), default=None, help="Scan every N-th frame (default: ~6 per s).")
@click.option("--per-bin", type=click.IntRange(min=1), default=2, show_default=True, help="Frames kept per yaw bin.")
@model_option
@refine_options
@batch_options
@click.option("--json", "as_json", is_flag=True, help="Print summary.json's per-setting figures as one JSON line.")
def micc_cmd(root, outdir, settings, subjects, gt_dir, stride, per_bin, model_name, refine, medium, workers, scheduler,
             as_json):
    """Reconstruct every MICC Florence video under ROOT (subject_XX/Video/<Setting>.mjpg) and score it
    against the subject's frontal scans with the MICC protocol. Resumable: a rerun skips finished videos."""
    from fitter.datasets.micc import SETTINGS, run_micc, subject_name

    settings = comma_list(settings, "--settings")
    for s in settings:
        if s not in SETTINGS:
            raise click.UsageError(f"--settings: unknown MICC setting '{s}' (available: {', '.join(SETTINGS)})")
    if subjects is not None:
        try:
            subjects = [subject_name(s) for s in comma_list(subjects, "--subjects")]
        except ValueError as e:
            raise click.UsageError(f"--subjects: {e}") from None
    summary, doc = run_micc(root, outdir, settings, subjects, gt_dir, workers, scheduler, stride, per_bin,
                            model_name=model_name, progress=not as_json, log=stderr, refine=refine, medium=medium)
    write_batch_report(outdir, as_json)
    if as_json:
        click.echo(json.dumps({"per_setting": doc["per_setting"], "videos": doc["videos"]}))
    else:
        for s in settings:
            st = doc["per_setting"]["symmetric_mean_mm"][s]
            if st["n"]:
                click.echo(f"{s}: symmetric mean {st['mean']:.3f} ± {st['std']:.3f} mm over {st['n']} videos")
        click.echo(f"report: {Path(outdir) / 'summary.md'}")
    click.echo(f"facefit: {summary.line()}", err=True)
    for f in doc["failures"]:
        click.echo(f"facefit: not scored: {' '.join(v for v in (f['subject'], f['setting']) if v)}: {f['reason']}",
                   err=True)
    if doc["videos"]["failed"] or doc["videos"]["missing"]:
        sys.exit(3 if doc["videos"]["done"] == 0 else 4)


@click.command("report")
@click.argument("outdir", metavar="OUTDIR", type=click.Path())
def report_cmd(outdir):
    """Rebuild OUTDIR/report.html (and OUTDIR/report_files/) from what a `facefit micc`, `video` or
    `dataset build` run wrote into OUTDIR, finished or not: one self-contained page, offline, to open in a
    browser."""
    from fitter.report import write_report

    click.echo(f"wrote {write_report(outdir)}")
