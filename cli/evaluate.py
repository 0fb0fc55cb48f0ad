"""`facefit eval`: a reconstruction against a ground truth, by the MICC protocol or the NME
(fitter.registration.evaluate)."""
import json

import click
import numpy as np


@click.command("eval")
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
    from fitter.geometry.mesh import read_obj
    from fitter.model.morphable import UNIT_SCALES
    from fitter.prepared import PreparedModel
    from fitter.registration.evaluate import evaluate_mesh
    from fitter.registration.scan import read_points, read_scan

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
    from fitter.registration.evaluate import nme

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
