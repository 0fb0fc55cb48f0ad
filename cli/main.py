"""`facefit` command: every FacefitError becomes a one-line message and a non-zero exit code."""
import json
import os
import sys
import time

from pathlib import Path

import click
import numpy as np

from fitter import __version__
from fitter.errors import FacefitError

from .bench import bench
from .group import FacefitGroup, handle_sigterm


@click.group(cls=FacefitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facefit")
def cli():
    """facefit: classical 3D face reconstruction (3DMM fitting, Laplacian deformation, T-ICP, SFS).

    Models are stored under $FACEFIT_HOME (default ~/.cache/facefit).
    """


@cli.group(cls=FacefitGroup)
def model():
    """Install, list, describe and preview face models."""


@model.command("install")
@click.argument("name", default="ict")
@click.option("--from", "source", metavar="PATH_OR_URL",
              help="A folder, .zip or .tar.xz of the official files (or a model file), or a URL. "
                   "Default: download the registry's pinned archive.")
@click.option("--format", "fmt", type=click.Choice(["ict", "bfm2009", "bfm2017", "flame", "sfm"]),
              help="File format (needed for models not in the registry).")
@click.option("--seed", default=0, show_default=True, help="Seed of the landmark-embedding renders.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def model_install(name, source, fmt, seed, quiet):
    """Install model NAME (default: ict) into the model store, with its landmark embedding."""
    from fitter import installer

    log = (lambda *a: None) if quiet else (lambda m: click.echo(m, err=True))
    t0 = time.perf_counter()
    folder = installer.install(name, source, fmt, progress=not quiet, seed=seed, log=log)
    click.echo(f"installed model '{name}' in {folder} ({time.perf_counter() - t0:.0f} s)")


@model.command("list")
def model_list():
    """List installed models and the registry's models."""
    from fitter import store
    from fitter.registry import available

    inst = store.installed()
    for n in sorted(set(inst) | set(available())):
        click.echo(f"{n:10s} {'installed' if n in inst else 'not installed'}")


def _summary(info):
    lines = [f"model        {info['name']}  ({info.get('title', info.get('format', ''))})",
             f"licence      {info.get('license')}",
             f"source       {info.get('source')}" + ("  (checksums verified)" if info.get("checksums_verified") else ""),
             f"units        {info['units']}",
             f"vertices     {info['n_vertices']}",
             f"triangles    {info['n_triangles']}",
             f"identity     {info['n_identity']} modes (N(0,1) prior)",
             f"expression   {info['n_expression']} {'blendshapes in [0,1]' if info['expression_kind'] == 'blendshape' else 'PCA modes'}",
             f"regions      {', '.join(sorted(info.get('regions', {})))}"]
    e = info.get("landmark_embedding") or {}
    if not e.get("available"):
        lines.append(f"landmarks    no embedding: {e.get('reason', 'not built')}")
        return lines
    lines.append(f"landmarks    478 MediaPipe points embedded from {e['views_detected']}/{e['views']} renders "
                 f"({e['identities']} identities), median spread {e['spread_mm_median']} mm")
    ref = e.get("reference_68")
    if ref:
        lines.append(f"  vs model's own 68: inner-51 median {ref['inner51_median_mm']:.2f} mm "
                     f"(brows {ref['brows_median_mm']:.2f}, nose {ref['nose_median_mm']:.2f}, eyes "
                     f"{ref['eyes_median_mm']:.2f}, mouth {ref['mouth_median_mm']:.2f}; contour {ref['contour_median_mm']:.2f})")
    rp = e.get("reprojection") or {}
    if rp.get("views_detected"):
        lines.append(f"  reprojection on {rp['views_detected']} held-out renders ({rp['image_size']} px): median "
                     f"{rp['all_median_px']} px (inner {rp['inner_median_px']}, contour {rp['contour_median_px']}), "
                     f"p90 {rp['all_p90_px']} px, {100 * rp['all_median_iod']:.1f} % of interocular")
    return lines


@model.command("info")
@click.argument("name", default="ict")
@click.option("--json", "as_json", is_flag=True, help="Print model.json as JSON.")
def model_info(name, as_json):
    """Describe installed model NAME: sizes, units, regions, landmark-embedding accuracy."""
    from fitter import store

    info = store.model_info(name)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo("\n".join(_summary(info)))


@model.command("show")
@click.argument("name", default="ict")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--yaw", default=0.0, show_default=True, help="Degrees; positive turns the nose to the image right.")
@click.option("--pitch", default=0.0, show_default=True, help="Degrees; positive raises the nose.")
@click.option("--identity-seed", type=int, default=None, help="Render a random identity (default: the mean face).")
@click.option("--size", default=768, show_default=True, help="Image size in pixels.")
def model_show(name, output, yaw, pitch, identity_seed, size):
    """Render model NAME with its embedded landmarks drawn on it."""
    from pathlib import Path

    from fitter.io import ensure_writable_dir, write_image_atomic
    from fitter.prepared import PreparedModel
    from fitter.preview import model_preview

    ensure_writable_dir(Path(output).resolve().parent)
    img = model_preview(PreparedModel.load(name), yaw, pitch, identity_seed, size)
    write_image_atomic(output, img)
    click.echo(f"wrote {output}")


def _example_photo():
    """matplotlib's sample portrait of Grace Hopper (public domain), installed with the dependencies."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _as_usage_error(check):
    """A click callback from a library check: its InputError becomes a usage error (exit 2)."""
    def callback(ctx, param, value):
        from fitter.errors import InputError

        try:
            return check(value)
        except InputError as e:
            raise click.BadParameter(str(e)) from None
    return callback


def _check_focal(value):
    from fitter.pipeline import check_focal

    return check_focal(value)


def _check_stages(value):
    from fitter.pipeline import check_stages

    return check_stages([s.strip() for s in value.split(",") if s.strip()])


def _check_depth_scale(value):
    from fitter.register import check_depth_scale

    return check_depth_scale(value)


def _refine_options(f):
    """--no-refine and --no-medium, shared by the multi-view commands."""
    f = click.option("--medium/--no-medium", "medium", default=True,
                     help="After the refinement, the multi-view medium stage: a plane sweep along the normals and "
                          "the mesh moved towards it, beyond the model's space. On by default; it moves the mesh "
                          "only where its sweep is confident on enough of the face (skin texture), and says in "
                          "params.json why it did not.")(f)
    f = click.option("--no-refine", "refine", is_flag=True, default=True, flag_value=False,
                     help="Skip the model-space refinement by feature tracks across the views: the landmark "
                          "joint fit only. It is skipped by itself, with the reason in "
                          "params.json, where the views give too few tracks (faces with little texture).")(f)
    return f


@cli.command("fit")
@click.argument("images", nargs=-1, type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Output folder: one sub-folder per image (and face).")
@click.option("--model", "model_name", default="ict", show_default=True)
@click.option("--stages", default="coarse,medium,fine", show_default=True, callback=_as_usage_error(_check_stages),
              help="Comma-separated stages to run, in order: coarse (landmark model fit), medium (Laplacian "
                   "deformation towards the landmarks), fine (shape from shading: depth_refined.png, "
                   "normals.png, detail.obj).")
@click.option("--focal", type=float, default=None, callback=_as_usage_error(_check_focal),
              help="Focal length in pixels, > 0 (default: EXIF, else estimated).")
@click.option("--all-faces", is_flag=True, help="Fit every face, not only the largest.")
@click.option("--example", is_flag=True, help="Fit the built-in example photo (matplotlib's Grace Hopper).")
@click.option("--json", "as_json", is_flag=True, help="Print a one-line JSON summary per face.")
@click.option("--texture-size", default=1024, show_default=True, type=click.IntRange(64, 8192),
              help="UV texture size in pixels (64-8192).")
@click.option("--mesh-format", type=click.Choice(["obj", "glb", "ply"]), default="obj", show_default=True,
              help="Also write mesh.glb (glTF binary, textured, y up) or mesh.ply (UVs, vertex colours) "
                   "beside mesh.obj.")
@click.option("--same-person", is_flag=True,
              help="The photos show one person: fit one identity to all of them jointly (per-photo pose and "
                   "expression; outlier photos dropped) and write OUTDIR/<first stem>_joint/ as `facefit video` "
                   "does (identity.obj, texture.png, params.json, frames.png): the joint coarse fit, refined by "
                   "feature tracks across the photos where they have the texture for it.")
@click.option("--same-expression", is_flag=True,
              help="With --same-person: the photos were taken at one moment (a camera rig, one session's turn of "
                   "the head): one expression for all of them in the joint landmark fit, not one per photo.")
@_refine_options
def fit_cmd(images, outdir, model_name, stages, focal, all_faces, example, as_json, texture_size, mesh_format,
            same_person, same_expression, refine, medium):
    """Fit the face model to each photo: mesh.obj/.mtl + texture.png, params.json, overlay.png and
    landmarks.json in OUTDIR/<image stem>/. A photo that fails is reported and the others go on."""
    from fitter.io import ensure_writable_dir
    from fitter.pipeline import check_result_dir, fit_photo, write_result
    from fitter.prepared import PreparedModel

    paths = list(images) + ([_example_photo()] if example else [])
    if not paths:
        raise click.UsageError("give one or more IMAGES, or --example")
    if same_expression and not same_person:
        raise click.UsageError("--same-expression is for a joint fit: give --same-person too")
    if same_person:
        first = {}
        for p in paths:
            first.setdefault(str(Path(p).resolve()), p)
        unique = list(first.values())
        if len(unique) < len(paths):
            _stderr("facefit: warning: a photo is given more than once: fitted once")
            paths = unique
        if all_faces:
            raise click.UsageError("--same-person fits one person: it does not take --all-faces")
        if click.get_current_context().get_parameter_source("stages").name != "DEFAULT":
            click.echo("facefit: warning: --same-person runs the joint coarse fit only; --stages is not used", err=True)
        return _fit_same_person(paths, outdir, model_name, focal, texture_size, as_json, refine, medium, mesh_format,
                                same_expression)
    ensure_writable_dir(outdir)
    prepared = PreparedModel.load(model_name)
    failed = 0
    for p in paths:
        try:
            check_result_dir(outdir, p, 0)  # before the work: a file where this photo's folder goes
            results = fit_photo(p, prepared, stages, focal, all_faces, texture_size)
            dirs = [write_result(r, prepared, outdir, mesh_format) for r in results]
        except Exception as e:  # one photo's failure is reported and the batch goes on
            if not isinstance(e, FacefitError) and os.environ.get("FACEFIT_DEBUG"):
                raise
            failed += 1
            msg = str(e) if isinstance(e, FacefitError) else f"internal error: {e.__class__.__name__}: {e}"
            click.echo(f"facefit: {p}: {msg}", err=True)
            if as_json:
                click.echo(json.dumps({"image": p, "ok": False, "error": msg}))
            continue
        for r, d in zip(results, dirs):
            summary = {"image": p, "ok": True, "face": r.face_index, "output": str(d),
                       "landmark_error_px": round(r.fit.error_px, 3), "landmark_error_iod": round(r.fit.error_iod, 5),
                       "coarse_ms": round(1e3 * r.times["coarse_s"], 1)}
            if r.medium is not None:
                summary["medium_ms"] = round(1e3 * r.times["medium_s"], 1)
            if r.fine is not None:
                summary["fine_ms"] = round(1e3 * r.times["fine_s"], 1)
                summary["photometric_rms"] = [round(r.fine.photometric_rms_before, 5),
                                              round(r.fine.photometric_rms_after, 5)]
            elif "fine_error" in r.times:
                summary["fine_error"] = r.times["fine_error"]
            click.echo(json.dumps(summary) if as_json else
                       f"{p}: face {r.face_index} -> {d} (landmark error {r.fit.error_px:.2f} px, "
                       f"{100 * r.fit.error_iod:.1f} % of interocular)")
    if failed:
        sys.exit(3 if failed == len(paths) else 4)


def _fit_same_person(paths, outdir, model_name, focal, texture_size, as_json, refine=True, medium=True,
                     mesh_format="obj", same_expression=False):
    """One identity from several photos. Exit 0 when every photo was fitted, 4 when some were not (unreadable,
    no face, or dropped as not the person the others show), 3 when none was."""
    from fitter.io import ensure_writable_dir
    from fitter.prepared import PreparedModel
    from fitter.video import reconstruct_photos, write_multiview

    ensure_writable_dir(outdir)
    folder = Path(outdir) / f"{Path(paths[0]).stem}_joint"
    if folder.exists() and not folder.is_dir():
        raise click.UsageError(f"{folder} exists and is not a folder")
    prepared = PreparedModel.load(model_name)
    res = reconstruct_photos(prepared, paths, focal=focal, texture_size=texture_size, name=folder.name,
                             refine=refine, medium=medium, shared_expression=same_expression)
    write_multiview(res, prepared, folder, mesh_format)
    for r in res.records:
        if r.status != "kept":
            click.echo(f"facefit: {r.source}: {r.status}" + (f" ({r.reason})" if r.reason else ""), err=True)
    errors = [im.error_iod for im in res.joint.fit.images]
    fitted = len(res.joint.kept)
    summary = {"output": str(folder), "photos": len(paths), "fitted": fitted,
               "dropped": len(res.joint.dropped), "landmark_error_iod_median": round(float(np.median(errors)), 5),
               "not_fitted": [{"photo": r.source, "status": r.status, "reason": r.reason}
                              for r in res.records if r.status != "kept"]}
    click.echo(json.dumps(summary) if as_json else
               f"{fitted} of {len(paths)} photos fitted jointly -> {folder} (median landmark error "
               f"{100 * float(np.median(errors)):.1f} % of interocular)")
    if fitted < len(paths):
        sys.exit(4)


def _batch_options(f):
    """--workers and --scheduler, shared by the batch commands."""
    f = click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="An existing Dask cluster: tcp://HOST:8786 or a scheduler file (default: a local "
                          "cluster).")(f)
    f = click.option("--workers", type=click.IntRange(min=0), default=None,
                     help="Local worker processes (default: as many as cores, at most one per item; 0: run "
                          "in this process).")(f)
    return f


def _stderr(message):
    click.echo(message, err=True)


def _write_report(outdir, as_json=False):
    """OUT/report.html after a batch; a failure to write it is said in one line, not fatal to the batch."""
    from fitter.report import write_report

    try:
        path = write_report(outdir)
    except Exception as e:  # noqa: BLE001 - the batch's own outputs are written already
        if os.environ.get("FACEFIT_DEBUG"):
            raise
        from fitter.errors import one_line

        _stderr(f"facefit: warning: report.html not written: {one_line(e)}")
        return
    if not as_json:
        _stderr(f"facefit: report: {path}")


def _batch_exit(summary, n_items):
    click.echo(f"facefit: {summary.line()}", err=True)
    for item_id, reason in summary.failed.items():
        click.echo(f"facefit: failed: {item_id}: {reason}", err=True)
    if summary.failed:
        sys.exit(3 if len(summary.failed) == n_items else 4)


@cli.command("video")
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Output folder: OUTDIR/<video name>/ per video.")
@click.option("--model", "model_name", default="ict", show_default=True)
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Scan every N-th frame (default: about 6 frames per second of video).")
@click.option("--per-bin", type=click.IntRange(min=1), default=2, show_default=True,
              help="Frames kept per yaw bin (9 bins, edges ±10/30/50/70°).")
@click.option("--focal", type=float, default=None, callback=_as_usage_error(_check_focal),
              help="Focal length in pixels, > 0 (default: estimated).")
@click.option("--texture-size", default=512, show_default=True, type=click.IntRange(64, 8192),
              help="UV texture size in pixels (64-8192).")
@click.option("--mesh-format", type=click.Choice(["obj", "glb", "ply"]), default="obj", show_default=True,
              help="Also write identity.glb (glTF binary, textured, y up) or identity.ply beside identity.obj.")
@_refine_options
@_batch_options
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
            _stderr(f"facefit: warning: {v} is given more than once: reconstructed once")
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
                        progress=not as_json, desc="videos", log=_stderr)
    _write_report(outdir, as_json)
    for it in items:
        if it.id in summary.results:
            r = summary.results[it.id]
            click.echo(json.dumps(dict(r, ok=True, output=str(Path(outdir) / it.id))) if as_json else
                       f"{it.args['video']} -> {Path(outdir) / it.id} ({r['frames_kept']} of {r['frames_scanned']} "
                       f"scanned frames fitted, {r['frames_dropped']} dropped)")
        elif as_json:
            click.echo(json.dumps({"video": it.args["video"], "ok": False, "error": summary.failed.get(it.id)}))
    _batch_exit(summary, len(items))


@cli.command("micc")
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
@click.option("--model", "model_name", default="ict", show_default=True)
@_refine_options
@_batch_options
@click.option("--json", "as_json", is_flag=True, help="Print summary.json's per-setting figures as one JSON line.")
def micc_cmd(root, outdir, settings, subjects, gt_dir, stride, per_bin, model_name, refine, medium, workers, scheduler,
             as_json):
    """Reconstruct every MICC Florence video under ROOT (subject_XX/Video/<Setting>.mjpg) and score it
    against the subject's frontal scans with the MICC protocol. Resumable: a rerun skips finished videos."""
    from fitter.datasets.micc import SETTINGS, run_micc, subject_name

    settings = _comma_list(settings, "--settings")
    for s in settings:
        if s not in SETTINGS:
            raise click.UsageError(f"--settings: unknown MICC setting '{s}' (available: {', '.join(SETTINGS)})")
    if subjects is not None:
        try:
            subjects = [subject_name(s) for s in _comma_list(subjects, "--subjects")]
        except ValueError as e:
            raise click.UsageError(f"--subjects: {e}") from None
    summary, doc = run_micc(root, outdir, settings, subjects, gt_dir, workers, scheduler, stride, per_bin,
                            model_name=model_name, progress=not as_json, log=_stderr, refine=refine, medium=medium)
    _write_report(outdir, as_json)
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


def _comma_list(text, option):
    """The values of a comma-separated option, each once, in order; a usage error when there is none."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise click.UsageError(f"{option}: give one or more comma-separated values")
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        _stderr(f"facefit: warning: {option} names a value more than once: each runs once")
    return unique


@cli.command("register")
@click.argument("color_path", metavar="COLOR", required=False, type=click.Path())
@click.argument("depth_path", metavar="DEPTH", required=False, type=click.Path())
@click.option("--intrinsics", "intrinsics_path", type=click.Path(),
              help='JSON with {"fx", "fy", "cx", "cy"} or {"K": 3x3}, pixels of the colour image (OpenCV).')
@click.option("--depth-scale", default=1.0, show_default=True, callback=_as_usage_error(_check_depth_scale),
              help="Multiplies the depth values to get mm (e.g. 1000 for metres); > 0.")
@click.option("--scan", "scan_path", type=click.Path(), default=None,
              help="Register to a 3D scan (.obj/.ply/.vtk/.glb) instead of an RGB-D pair.")
@click.option("--scan-units", type=click.Choice(["mm", "cm", "m"]), default=None, help="Default: inferred.")
@click.option("--scan-texture", type=click.Path(), default=None,
              help="Texture image of the scan (for a scan whose file has UVs but no colours, e.g. .vtk).")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False))
@click.option("--model", "model_name", default="ict", show_default=True)
@click.option("--no-texture", is_flag=True, help="Geometry-only NICP (no colour constraint).")
@click.option("--schedule", type=click.Choice(["fast", "accurate"]), default="fast", show_default=True,
              help="Stiffness schedule: fast (α = 6, 1) or accurate (α = 10, 3, 1; ~1.7x the time).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line.")
def register_cmd(color_path, depth_path, intrinsics_path, depth_scale, scan_path, scan_units, scan_texture, outdir,
                 model_name, no_texture, schedule, as_json):
    """Register the face model to an RGB-D capture (COLOR + DEPTH + --intrinsics) or to a scan (--scan):
    landmarks, coarse fit lifted onto the depth, texture-constrained non-rigid ICP, and the split into a
    similarity and S_morph. Writes registered.obj, s_morph.npz, overlay.png, report.json and capture.json
    (where the capture came from, for `facefit augment`) in OUTDIR."""
    from fitter.capture import CaptureSpec, register_capture
    from fitter.errors import InputError
    from fitter.io import ensure_writable_dir
    from fitter.nicp import SCHEDULES
    from fitter.prepared import PreparedModel
    from fitter.register import registration_overlay, write_registration

    if scan_path and (color_path or depth_path):
        raise InputError("give either COLOR DEPTH --intrinsics K.json or --scan MESH, not both")
    if not scan_path and not (color_path and depth_path and intrinsics_path):
        raise InputError("give COLOR DEPTH --intrinsics K.json (or --scan MESH)")
    for p in (scan_path, scan_texture, color_path, depth_path, intrinsics_path):
        if p and not Path(p).is_file():
            raise InputError(f"{p}: a folder, not a file" if Path(p).is_dir() else f"{p}: no such file")
    ensure_writable_dir(outdir)
    prepared = PreparedModel.load(model_name)
    spec = (CaptureSpec.of_scan(scan_path, scan_units, scan_texture) if scan_path else
            CaptureSpec.rgbd(color_path, depth_path, intrinsics_path, depth_scale))
    notes = []
    reg, capture, spec = register_capture(prepared, spec, SCHEDULES[schedule], use_color=not no_texture, notes=notes)
    for note in notes:
        click.echo(f"facefit: warning: {note}", err=True)
    # the overlay is drawn on the capture's image (a scan's: the registration's own view of it)
    overlay = registration_overlay(prepared, capture.vertices, capture.color, capture.K)
    d = write_registration(reg, prepared.model, outdir, overlay, spec.to_dict())
    rep = reg.report
    if as_json:
        click.echo(json.dumps(dict(rep, output=str(d))))
    else:
        click.echo(f"registered -> {d} (inliers {100 * rep['inlier_fraction'][-1]:.0f} %, median residual "
                   f"{rep['median_residual_mm'][-1]:.2f} mm, {rep['times_s']['total_s']:.2f} s)")


def _angle_options(f):
    """--yaws, --pitches and --format, shared by augment and dataset build."""
    f = click.option("--format", "fmt", type=click.Choice(["default", "300wlp"]), default="default", show_default=True,
                     help="300wlp: also write each sample's 300W-LP .mat (roi, pt2d, Pose_Para).")(f)
    f = click.option("--pitches", default="-20,0,20", show_default=True,
                     help="Head pitches in degrees (|pitch| <= 25): 'a,b,c' or 'start:stop:step'.")(f)
    f = click.option("--yaws", default="-90:90:15", show_default=True,
                     help="Head yaws in degrees (|yaw| <= 90): 'a,b,c' or 'start:stop:step' (one that starts "
                          "with a minus: --yaws=-60:60:30).")(f)
    return f


@cli.command("augment")
@click.argument("reg_dir", metavar="REGISTRATION_DIR", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Dataset folder: samples go to OUTDIR/<capture>/, the index to OUTDIR/index.csv.")
@click.option("--model", "model_name", default="ict", show_default=True)
@_angle_options
@click.option("--json", "as_json", is_flag=True, help="Print a one-line JSON summary.")
def augment_cmd(reg_dir, outdir, model_name, yaws, pitches, fmt, as_json):
    """Out-of-plane pose augmentation of a registered capture (the folder written by `facefit register`):
    the head turned to every --yaws x --pitches about the face centre, what the source never saw filled
    in, and exact labels (pose, landmarks with visibility, the filled mask). Writes
    OUTDIR/<capture>/<capture>_<yaw>_<pitch>.jpg/.json/.npz, samples.csv, contact_sheet.png, and
    OUTDIR/index.csv."""
    from fitter.augment.dataset import augment_registration, parse_angles
    from fitter.augment.sample import MAX_PITCH_DEG
    from fitter.prepared import PreparedModel

    yaw_list = parse_angles(yaws, "--yaws", 90)
    pitch_list = parse_angles(pitches, "--pitches", MAX_PITCH_DEG)
    prepared = PreparedModel.load(model_name)
    rows, times = augment_registration(prepared, reg_dir, outdir, yaw_list, pitch_list, fmt)
    out = Path(outdir) / rows[0]["capture"]
    if as_json:
        click.echo(json.dumps({"output": str(out), "samples": len(rows), "times_s": times}))
    else:
        click.echo(f"{reg_dir} -> {out} ({len(rows)} samples, {times['samples_s'] / len(rows):.2f} s each; "
                   f"contact_sheet.png; index {Path(outdir) / 'index.csv'})")


@cli.group(cls=FacefitGroup)
def dataset():
    """Build training datasets from captures."""


@dataset.command("build")
@click.argument("root", metavar="CAPTURES_ROOT", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False))
@click.option("--model", "model_name", default="ict", show_default=True)
@_angle_options
@_batch_options
@click.option("--json", "as_json", is_flag=True, help="Print a one-line JSON summary.")
def dataset_build_cmd(root, outdir, model_name, yaws, pitches, fmt, workers, scheduler, as_json):
    """Register and augment every capture folder under CAPTURES_ROOT (color.* + depth.* + intrinsics.json,
    or one scan file) through the batch engine (resumable; a failed capture never stops the rest).
    Captures whose registration is below the quality thresholds (README) are left out and listed in
    OUTDIR/rejected.csv; the samples of the rest are indexed in OUTDIR/index.csv."""
    from fitter.augment.dataset import build_dataset, find_captures, parse_angles
    from fitter.augment.sample import MAX_PITCH_DEG

    yaw_list = parse_angles(yaws, "--yaws", 90)
    pitch_list = parse_angles(pitches, "--pitches", MAX_PITCH_DEG)
    n = len(find_captures(root, outdir))
    summary, accepted, rejected = build_dataset(model_name, root, outdir, yaw_list, pitch_list, fmt, workers,
                                                scheduler, progress=not as_json, log=_stderr)
    _write_report(outdir, as_json)
    n_samples = sum(summary.results[c].get("samples", 0) for c in accepted if c in summary.results)
    if as_json:
        click.echo(json.dumps({"output": str(outdir), "captures": n, "samples": n_samples, "accepted": accepted,
                               "rejected": [r["capture"] for r in rejected], "failed": summary.failed}))
    else:
        click.echo(f"{root} -> {outdir}: {len(accepted)} captures ({n_samples} samples) in the dataset, "
                   f"{len(rejected)} rejected "
                   f"(rejected.csv), {len(summary.failed)} failed; index.csv")
    for r in rejected:
        click.echo(f"facefit: rejected: {r['capture']}: {r['reason']}", err=True)
    _batch_exit(summary, n)


@cli.command("report")
@click.argument("outdir", metavar="OUTDIR", type=click.Path())
def report_cmd(outdir):
    """Rebuild OUTDIR/report.html (and OUTDIR/report_files/) from what a `facefit micc`, `video` or
    `dataset build` run wrote into OUTDIR, finished or not: one self-contained page, offline, to open in a
    browser."""
    from fitter.report import write_report

    click.echo(f"wrote {write_report(outdir)}")


@cli.command("eval")
@click.argument("recon", type=click.Path())
@click.argument("gt", type=click.Path())
@click.option("--gt-landmarks", type=click.Path(), default=None,
              help="3D points in GT units: the nose tip alone, or right eye, left eye, nose tip, right and "
                   "left mouth corner (one 'x y z' per line). Default: found by rendering the GT and "
                   "detecting its landmarks.")
@click.option("--gt-units", type=click.Choice(["mm", "cm", "m"]), default=None, help="Default: inferred.")
@click.option("--recon-units", type=click.Choice(["mm", "cm", "m"]), default="mm", show_default=True,
              help="Units of RECON (facefit writes mm).")
@click.option("--model", "model_name", default="ict", show_default=True,
              help="The model whose topology RECON has (for its nose tip, landmarks and outer skin).")
@click.option("--crop", "crop_mm", default=95.0, show_default=True, help="Crop radius around the nose tip, mm.")
@click.option("--symmetric", is_flag=True, help="Also report the reconstruction-to-GT direction.")
@click.option("--nme", is_flag=True,
              help="Instead: the NME (S1 Eq. 10-11) against a GT in the model's topology (e.g. a registration): "
                   "face-region vertex error over the outer interocular distance, with its parts along and "
                   "across the viewing direction.")
@click.option("--view-dir", default="0,0,1", show_default=True,
              help="With --nme: the viewing direction in RECON's frame (facefit meshes are in their camera's "
                   "frame: 0,0,1).")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(recon, gt, gt_landmarks, gt_units, recon_units, model_name, crop_mm, symmetric, nme, view_dir,
             as_json):
    """MICC-protocol error of a reconstruction RECON (a facefit mesh) against a ground-truth scan GT, or with
    --nme the NME against a GT mesh in the model's topology."""
    from fitter.evaluate import evaluate_mesh
    from fitter.mesh import read_obj
    from fitter.model import UNIT_SCALES
    from fitter.prepared import PreparedModel
    from fitter.scan import read_points, read_scan

    prepared = PreparedModel.load(model_name)
    rec = read_obj(recon)
    scan = read_scan(gt, gt_units, units_option="--gt-units")
    for note in scan.notes:
        click.echo(f"facefit: warning: {note}", err=True)
    if nme:
        return _eval_nme(prepared, rec.V * UNIT_SCALES[recon_units], scan.V, view_dir, as_json)
    points = read_points(gt_landmarks) * scan.unit_scale if gt_landmarks else None
    res = evaluate_mesh(prepared, rec.V * UNIT_SCALES[recon_units], scan, points, crop_mm, symmetric)
    if not 0.5 <= res["scale"] <= 2.0:
        click.echo(f"facefit: warning: the reconstruction had to be scaled by {res['scale']:.4g} to meet the scan: "
                   f"its units are not the scan's (RECON is read as {recon_units}; give --recon-units, and "
                   f"--gt-units if the scan's were guessed wrong)", err=True)
    if as_json:
        click.echo(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}))
    else:
        click.echo(f"MICC error {res['mean_mm']:.3f} mm (RMSE {res['rmse_mm']:.3f}, median {res['median_mm']:.3f}) "
                   f"over {res['gt_points']} GT points within {crop_mm:g} mm of the nose tip; scale {res['scale']:.4f}"
                   + (f"; symmetric {res['symmetric_mean_mm']:.3f} mm" if symmetric else ""))


def _eval_nme(prepared, pred_V, true_V, view_dir, as_json):
    from fitter.evaluate import nme

    try:
        ve = [float(x) for x in view_dir.split(",")]
    except ValueError:
        ve = []
    if len(ve) != 3 or not np.isfinite(ve).all() or np.linalg.norm(ve) == 0:
        raise click.UsageError(f"--view-dir takes three numbers x,y,z (not all 0), got '{view_dir}'")
    res = nme(prepared, pred_V, true_V, ve)
    if as_json:
        click.echo(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in res.items()}))
    else:
        click.echo(f"NME {100 * res['nme']:.3f} % (parallel to the view {100 * res['nme_parallel']:.3f} %, "
                   f"orthogonal {100 * res['nme_orthogonal']:.3f} %) over {res['vertices']} face vertices, "
                   f"outer interocular distance {res['iod_mm']:.1f} mm")


cli.add_command(bench)


def main():
    handle_sigterm()
    cli(prog_name="facefit")


if __name__ == "__main__":
    main()
