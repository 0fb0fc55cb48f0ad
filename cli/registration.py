"""`facefit register`, `facefit augment` and `facefit dataset build`: registration of RGB-D captures and scans
(fitter.registration) and the datasets built from them (fitter.augment)."""
import json
from pathlib import Path

import click

from .common import (FacefitGroup, angle_options, as_usage_error, batch_exit, batch_options, model_option, stderr,
                     write_batch_report)


def _check_depth_scale(value):
    from fitter.registration.register import check_depth_scale

    return check_depth_scale(value)


@click.command("register")
@click.argument("color_path", metavar="COLOR", required=False, type=click.Path())
@click.argument("depth_path", metavar="DEPTH", required=False, type=click.Path())
@click.option("--intrinsics", "intrinsics_path", type=click.Path(),
              help='JSON with {"fx", "fy", "cx", "cy"} or {"K": 3x3}, pixels of the colour image (OpenCV).')
@click.option("--depth-scale", default=1.0, show_default=True, callback=as_usage_error(_check_depth_scale),
              help="Multiplies the depth values to get mm (e.g. 1000 for metres); > 0.")
@click.option("--scan", "scan_path", type=click.Path(), default=None,
              help="Register to a 3D scan (.obj/.ply/.vtk/.glb) instead of an RGB-D pair.")
@click.option("--scan-units", type=click.Choice(["mm", "cm", "m"]), default=None, help="Default: inferred.")
@click.option("--scan-texture", type=click.Path(), default=None,
              help="Texture image of the scan (for a scan whose file has UVs but no colours, e.g. .vtk).")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False))
@model_option
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
    from fitter.errors import InputError
    from fitter.io import ensure_writable_dir
    from fitter.prepared import PreparedModel
    from fitter.registration.capture import CaptureSpec, register_capture
    from fitter.registration.nicp import SCHEDULES
    from fitter.registration.register import registration_overlay, write_registration

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


@click.command("augment")
@click.argument("reg_dirs", metavar="REGISTRATION_DIR...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Dataset folder: samples go to OUTDIR/<capture>/, the index to OUTDIR/index.csv.")
@model_option
@angle_options
@batch_options
@click.option("--json", "as_json", is_flag=True, help="Print a one-line JSON summary.")
def augment_cmd(reg_dirs, outdir, model_name, yaws, pitches, fmt, workers, scheduler, as_json):
    """Out-of-plane pose augmentation of registered captures (folders written by `facefit register`): the
    head turned to every --yaws x --pitches about the face centre, what the source never saw filled in,
    and exact labels (pose, landmarks with visibility, the filled mask). Through the batch engine
    (resumable; a failed capture never stops the rest). Writes
    OUTDIR/<capture>/<capture>_<yaw>_<pitch>.jpg/.json/.npz, samples.csv, contact_sheet.png,
    OUTDIR/index.csv and OUTDIR/report.html."""
    from fitter.augment.dataset import augment_registrations, parse_angles
    from fitter.augment.sample import MAX_PITCH_DEG

    yaw_list = parse_angles(yaws, "--yaws", 90)
    pitch_list = parse_angles(pitches, "--pitches", MAX_PITCH_DEG)
    summary = augment_registrations(model_name, reg_dirs, outdir, yaw_list, pitch_list, fmt, workers, scheduler,
                                    progress=not as_json, log=stderr)
    write_batch_report(outdir, as_json)
    n_samples = sum(r.get("samples", 0) for r in summary.results.values())
    if as_json:
        click.echo(json.dumps({"output": str(outdir), "registrations": len(reg_dirs), "samples": n_samples,
                               "results": summary.results, "failed": summary.failed}))
    else:
        click.echo(f"{len(summary.results)} of {len(reg_dirs)} registrations -> {outdir} ({n_samples} samples; "
                   f"OUTDIR/<capture>/contact_sheet.png; index {Path(outdir) / 'index.csv'})")
    batch_exit(summary, len(reg_dirs))


@click.group(cls=FacefitGroup)
def dataset():
    """Build training datasets from captures."""


@dataset.command("build")
@click.argument("root", metavar="CAPTURES_ROOT", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False))
@model_option
@angle_options
@batch_options
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
                                                scheduler, progress=not as_json, log=stderr)
    write_batch_report(outdir, as_json)
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
    batch_exit(summary, n)
