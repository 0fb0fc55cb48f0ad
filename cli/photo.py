"""`facefit fit`: single photos (fitter.photo.pipeline) and, with --same-person, one identity from several
photos (fitter.video.reconstruct_photos)."""
import json
import os
import sys
from pathlib import Path

import click
import numpy as np

from fitter.errors import FacefitError

from .common import as_usage_error, check_focal_option, model_option, refine_options, stderr


def _example_photo():
    """matplotlib's sample portrait of Grace Hopper (public domain), installed with the dependencies."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _check_stages(value):
    from fitter.photo.pipeline import check_stages

    return check_stages([s.strip() for s in value.split(",") if s.strip()])


@click.command("fit")
@click.argument("images", nargs=-1, type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Output folder: one sub-folder per image (and face).")
@model_option
@click.option("--stages", default="coarse,medium,fine", show_default=True, callback=as_usage_error(_check_stages),
              help="Comma-separated stages to run, in order: coarse (landmark model fit), medium (Laplacian "
                   "deformation towards the landmarks), fine (shape from shading: depth_refined.png, "
                   "normals.png, detail.obj).")
@click.option("--focal", type=float, default=None, callback=as_usage_error(check_focal_option),
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
@refine_options
def fit_cmd(images, outdir, model_name, stages, focal, all_faces, example, as_json, texture_size, mesh_format,
            same_person, same_expression, refine, medium):
    """Fit the face model to each photo: mesh.obj/.mtl + texture.png, params.json, overlay.png and
    landmarks.json in OUTDIR/<image stem>/. A photo that fails is reported and the others go on."""
    from fitter.io import ensure_writable_dir
    from fitter.photo.pipeline import check_result_dir, fit_photo, write_result
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
            stderr("facefit: warning: a photo is given more than once: fitted once")
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
