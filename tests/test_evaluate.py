"""MICC-protocol evaluation: a mesh against a transformed copy of itself scores ≈ 0; a known offset
is measured."""
import numpy as np

from fitter.camera import rotation_matrix
from fitter.evaluate import micc_error


def test_mesh_against_transformed_copy_of_itself(ict_model):
    m = ict_model
    V = m.shape(m.random_coefficients(np.random.default_rng(5), 1.0)[0])
    ref = m.metadata["reference_landmarks_68"]
    R = rotation_matrix(20, -10, 5)
    s, t = 1.3, np.array([40.0, -12.0, 300.0])
    gt = s * V @ R.T + t
    pts = [ref[36], ref[45], ref[30], ref[48], ref[54]]
    skin = m.faces_in("outer_skin")  # a scan has only the outer surface
    res = micc_error(V, m.faces, gt, skin, gt[ref[30]], V[ref[30]], V[pts], gt[pts] + 2.0,
                     symmetric=True, recon_mask=m.region_mask("outer_skin"))
    assert res["mean_mm"] < 0.05 and res["symmetric_mean_mm"] < 0.05
    assert abs(res["scale"] - s) < 1e-3
    assert res["gt_points"] > 1000


def test_known_normal_offset_is_measured(ict_model):
    """Every vertex pushed 1 mm along its normal: the MICC error is close to 1 mm (ICP may absorb a
    little of it as scale)."""
    from fitter.mesh import vertex_normals

    m = ict_model
    V = m.mean
    mask = m.region_mask("outer_skin")
    gt = V + 1.0 * vertex_normals(V, m.faces)
    ref = m.metadata["reference_landmarks_68"]
    res = micc_error(V, m.faces, gt, m.faces_in("outer_skin"), gt[ref[30]], V[ref[30]], recon_mask=mask)
    assert 0.4 < res["mean_mm"] < 1.1, res


def test_eval_cli_on_a_transformed_copy(ict_model, tmp_path):
    import json

    from click.testing import CliRunner

    from cli.main import cli
    from fitter.mesh import write_obj

    m = ict_model
    V = m.shape(m.random_coefficients(np.random.default_rng(9), 1.0)[0])
    write_obj(tmp_path / "recon.obj", V, m.faces)
    R = rotation_matrix(-15, 5, 0)
    gt = (V @ R.T + [5.0, 0, 100.0]) / 1000.0  # a scan in metres
    write_obj(tmp_path / "gt.obj", gt, m.faces_in("outer_skin"))
    ref = m.metadata["reference_landmarks_68"]
    (tmp_path / "lm.txt").write_text("%f %f %f\n" % tuple(gt[ref[30]]))
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "recon.obj"), str(tmp_path / "gt.obj"),
                                 "--gt-landmarks", str(tmp_path / "lm.txt"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["mean_mm"] < 0.05 and abs(res["scale"] - 1) < 1e-3
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "lm.txt"), str(tmp_path / "gt.obj")])
    assert r.exit_code == 2 and "Traceback" not in r.output
