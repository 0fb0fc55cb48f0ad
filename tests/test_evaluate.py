"""MICC-protocol evaluation: a mesh against a transformed copy of itself scores ≈ 0; a known offset
is measured."""
import numpy as np

from fitter.geometry.camera import rotation_matrix
from fitter.registration.evaluate import micc_error


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
    from fitter.geometry.mesh import vertex_normals

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
    from fitter.geometry.mesh import write_obj

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


def test_nme_invariants_and_view_split(ict_prepared):
    """S1 Eq. 10-11: 0 for a rigidly moved copy; a known offset along the view is all 'parallel' and is
    normalised by the truth's outer interocular distance; the view direction turns with the alignment."""
    from fitter.registration.evaluate import nme

    model = ict_prepared.model
    V = model.shape(model.random_coefficients(np.random.default_rng(5), 1.0)[0])
    R = rotation_matrix(25, -10, 5)
    moved = V @ R.T + [3.0, -40.0, 600.0]
    res = nme(ict_prepared, moved, V)
    assert res["nme"] < 1e-9 and res["vertices"] == len(model.regions["face"])
    ref = model.metadata["reference_landmarks_68"]
    iod = np.linalg.norm(V[ref[45]] - V[ref[36]])
    assert abs(res["iod_mm"] - iod) < 1e-9
    # the face region pushed 1 mm along the truth's z, seen by a camera looking along the moved copy's R z
    face = np.asarray(model.regions["face"])
    bumped = V.copy()
    bumped[face[::2], 2] += 1.0  # half the face vertices (the rigid alignment cannot remove it)
    res = nme(ict_prepared, bumped @ R.T, V, view_dir=R @ [0.0, 0.0, 1.0])
    assert 0.3 / iod < res["nme"] < 0.7 / iod
    assert res["nme_orthogonal"] < 0.15 * res["nme_parallel"]
    assert abs(res["nme"] - res["nme_parallel"]) < 0.15 * res["nme"]
    res = nme(ict_prepared, bumped @ R.T, V, view_dir=R @ [1.0, 0.0, 0.0])  # seen from the side
    assert res["nme_parallel"] < 0.15 * res["nme_orthogonal"]


def test_eval_nme_cli(ict_model, tmp_path):
    import json

    from click.testing import CliRunner

    from fitter.cli.main import cli
    from fitter.geometry.mesh import write_obj

    m = ict_model
    V = m.shape(m.random_coefficients(np.random.default_rng(6), 1.0)[0])
    W = m.shape(m.random_coefficients(np.random.default_rng(7), 1.0)[0])
    write_obj(tmp_path / "a.obj", V, m.faces)
    write_obj(tmp_path / "b.obj", W, m.faces)
    write_obj(tmp_path / "small.obj", V[::200], np.arange(132).reshape(44, 3))  # head-sized, not the topology
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "a.obj"), str(tmp_path / "b.obj"), "--nme", "--gt-units", "mm",
                                 "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert 0.005 < res["nme"] < 0.2 and res["nme_parallel"] < res["nme"] and res["nme_orthogonal"] < res["nme"]
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "a.obj"), str(tmp_path / "small.obj"), "--nme", "--gt-units",
                                 "mm"])
    assert r.exit_code == 2 and "topology" in r.output
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "a.obj"), str(tmp_path / "b.obj"), "--nme", "--view-dir", "0,0"])
    assert r.exit_code == 2 and "--view-dir" in r.output
