"""`facefit model ...`: install, list, describe and preview face models (fitter.install, fitter.model)."""
import json
import time

import click

from .common import FacefitGroup


@click.group(cls=FacefitGroup)
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
    from fitter.install import installer

    log = (lambda *a: None) if quiet else (lambda m: click.echo(m, err=True))
    t0 = time.perf_counter()
    folder = installer.install(name, source, fmt, progress=not quiet, seed=seed, log=log)
    click.echo(f"installed model '{name}' in {folder} ({time.perf_counter() - t0:.0f} s)")


@model.command("list")
def model_list():
    """List installed models and the registry's models."""
    from fitter.model import store
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
    from fitter.model import store

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
    from fitter.photo.preview import model_preview
    from fitter.prepared import PreparedModel

    ensure_writable_dir(Path(output).resolve().parent)
    img = model_preview(PreparedModel.load(name), yaw, pitch, identity_seed, size)
    write_image_atomic(output, img)
    click.echo(f"wrote {output}")
