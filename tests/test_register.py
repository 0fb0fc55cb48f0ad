"""Non-rigid ICP, T-ICP's colour term, the S1 Eq. 7 split and `facefit register`."""
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from conftest import grid_mesh
from fitter.bench.synthetic import smooth_displacement, synthetic_rgbd
from fitter.errors import InputError
from fitter.geometry.mesh import submesh
from fitter.registration.nicp import SCHEDULES, NicpSettings, nicp
from fitter.registration.register import read_depth, read_intrinsics, split_similarity, surface_samples


@pytest.mark.parametrize("schedule,central_ratio", [("accurate", 0.4), ("fast", 0.5)])
def test_nicp_recovers_a_smooth_deformation(ict_model, schedule, central_ratio):
    m = ict_model
    F, old = submesh(m.faces, m.region_mask("face"))
    rng = np.random.default_rng(4)
    V0 = m.mean[old]
    V_true = V0 + smooth_displacement(V0, np.arange(len(V0)), rng, amplitude_mm=4.0)
    target = surface_samples(V_true, F, 60_000, rng)
    # a few landmarks (as detected points would give) fix what sliding along the surface cannot
    lm = rng.choice(len(V0), 60, replace=False)
    before = np.linalg.norm(V0 - V_true, axis=1)
    res = nicp(V0, F, target, 90.0, SCHEDULES[schedule], lm, V_true[lm])
    err = np.linalg.norm(res.vertices - V_true, axis=1)
    from fitter.geometry.closest import MeshQuery

    surface = MeshQuery(V_true, F).closest(res.vertices).distances
    # on the surface everywhere; in the same place where the surface has shape (the central face) —
    # on the smooth jaw and neck sides vertices may slide along the surface, as NICP always allows
    central = np.linalg.norm(V0 - V0[np.argmax(V0[:, 2])], axis=1) < 45  # around the nose tip
    assert np.median(before) > 0.8 and np.median(before[central]) > 3.0
    assert np.median(surface) < 0.1 and np.percentile(surface, 90) < 0.5
    assert np.median(err[central]) < central_ratio * np.median(before[central])
    assert np.percentile(err, 90) < 0.7 * np.percentile(before, 90)
    assert res.inlier_fraction[-1] > 0.8


def _striped_plane(shift_mm):
    V, F = grid_mesh(41, 80.0, 600.0)  # 2 mm spacing, facing the camera at z = 600
    colors = np.full((len(V), 3), 0.8)
    stripe = np.abs(V[:, 0] - shift_mm) < 5.0
    colors[stripe] = 0.1
    return V, F, colors


def test_colour_term_moves_correspondences_where_geometry_is_ambiguous():
    """A plane is its own closest surface everywhere: geometry alone cannot see a sideways shift of the
    dark stripe painted on it; the colour term must follow it."""
    V, F, colors = _striped_plane(0.0)
    Vt, Ft, colors_t = _striped_plane(3.0)
    rng = np.random.default_rng(0)
    target = surface_samples(Vt, Ft, 40_000, rng, colors_t)
    target.boundary[:] = False  # the plane's rim is not a hole here
    stripe = np.abs(V[:, 0]) < 3.0
    s = NicpSettings(stiffness=(3.0, 1.0), landmark_weight=(0.0, 0.0), tau_v_iod=(0.2, 0.1), iterations=4)
    geo = nicp(V, F, target, 60.0, s)
    col = nicp(V, F, target, 60.0, s, template_colors=colors)
    shift_geo = np.mean(geo.vertices[stripe, 0] - V[stripe, 0])
    shift_col = np.mean(col.vertices[stripe, 0] - V[stripe, 0])
    assert abs(shift_geo) < 0.2
    assert shift_col > 1.0
    assert np.abs(col.vertices[:, 2] - 600.0).max() < 0.5  # it slides in the plane, not off it


def test_s_morph_and_similarity_reproduce_the_registration(ict_model):
    m = ict_model
    rng = np.random.default_rng(1)
    from fitter.geometry.camera import rotation_matrix

    V = 1.07 * (m.shape(rng.standard_normal(m.n_identity)) @ rotation_matrix(20, -10, 5).T) + [10.0, -20.0, 600.0]
    f, R, t, S = split_similarity(m, V)
    np.testing.assert_allclose(f * (m.mean + S) @ R.T + t, V, atol=1e-8)
    assert abs(f - 1.07) < 0.02 and np.linalg.det(R) > 0.999
    assert np.abs(S[m.region("face")]).mean() < 8.0  # the residual is the identity, not the pose


def test_depth_and_intrinsics_readers(tmp_path):
    D = np.zeros((30, 40), np.float32)
    D[5:25, 10:30] = 612.0
    cv2.imwrite(str(tmp_path / "d.png"), D.astype(np.uint16))
    np.save(tmp_path / "d_m.npy", D / 1000.0)
    assert np.array_equal(read_depth(tmp_path / "d.png"), D)
    import os

    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    assert cv2.imwrite(str(tmp_path / "d.exr"), D)
    assert np.array_equal(read_depth(tmp_path / "d.exr"), D)
    np.testing.assert_allclose(read_depth(tmp_path / "d_m.npy", 1000.0), D, rtol=1e-6)
    (tmp_path / "k1.json").write_text(json.dumps({"fx": 500, "fy": 510, "cx": 19.5, "cy": 14.5}))
    (tmp_path / "k2.json").write_text(json.dumps({"K": [[500, 0, 19.5], [0, 510, 14.5], [0, 0, 1]]}))
    np.testing.assert_array_equal(read_intrinsics(tmp_path / "k1.json"), read_intrinsics(tmp_path / "k2.json"))
    (tmp_path / "k3.json").write_text(json.dumps({"f": 500}))
    with pytest.raises(InputError, match="fx"):
        read_intrinsics(tmp_path / "k3.json")
    cv2.imwrite(str(tmp_path / "d8.png"), np.zeros((30, 40), np.uint8))
    with pytest.raises(InputError, match="8-bit"):
        read_depth(tmp_path / "d8.png")


@pytest.fixture(scope="module")
def capture(ict_prepared, tmp_path_factory):
    d = tmp_path_factory.mktemp("capture")
    c = synthetic_rgbd(ict_prepared, np.random.default_rng(7))
    cv2.imwrite(str(d / "color.png"), c["color"][:, :, ::-1])
    cv2.imwrite(str(d / "depth.png"), np.rint(c["depth"]).astype(np.uint16))
    (d / "K.json").write_text(json.dumps({"K": c["K"].tolist()}))
    return d, c


def test_register_cli_end_to_end(ict_model, capture, tmp_path):
    d, c = capture
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["register", str(d / "color.png"), str(d / "depth.png"), "--intrinsics",
                                 str(d / "K.json"), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    for name in ("registered.obj", "s_morph.npz", "overlay.png", "report.json"):
        assert (out / name).is_file(), name
    from fitter.geometry.mesh import read_obj

    V = read_obj(out / "registered.obj").V
    face = ict_model.region("face")
    seen = c["visible"][face] & ~c["occluded"][face]
    err = np.linalg.norm(V[face] - c["V"][face], axis=1)[seen]
    assert np.median(err) < 2.5  # mm: correspondence error (tangential sliding included) on visible skin
    z = np.load(out / "s_morph.npz")
    np.testing.assert_allclose(float(z["f"]) * (ict_model.mean + z["s_morph"]) @ z["R"].T + z["t"], V, atol=1e-2)
    report = json.loads((out / "report.json").read_text())
    assert report["texture_constraint"] and len(report["step_seconds"]) == len(NicpSettings().stiffness)


def test_register_cli_error_paths(ict_model, capture, tmp_path):
    d, c = capture
    run = lambda *a: CliRunner().invoke(cli, ["register", *map(str, a), "-o", str(tmp_path / "o")])  # noqa: E731
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 10), np.uint16))
    r = run(d / "color.png", small, "--intrinsics", d / "K.json")
    assert r.exit_code == 2 and "depth is 10x10 but the colour image is 640x480" in r.output
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((480, 640), np.uint16))
    assert "depth map is empty" in run(d / "color.png", empty, "--intrinsics", d / "K.json").output
    metres = tmp_path / "m.npy"
    np.save(metres, c["depth"] / 1000.0)
    r = run(d / "color.png", metres, "--intrinsics", d / "K.json")
    assert r.exit_code == 2 and "--depth-scale 1000" in r.output
    wall = tmp_path / "wall.png"  # a depth map with no face in it (a flat wall at 700 mm)
    cv2.imwrite(str(wall), np.full((480, 640), 700, np.uint16))
    r = run(d / "color.png", wall, "--intrinsics", d / "K.json")
    assert r.exit_code == 3 and "does not match a face" in r.output
    noface = tmp_path / "noface.png"
    cv2.imwrite(str(noface), np.full((480, 640, 3), 90, np.uint8))
    r = run(noface, d / "depth.png", "--intrinsics", d / "K.json")
    assert r.exit_code == 3 and "no face" in r.output
    r = run(d / "color.png", d / "depth.png")
    assert r.exit_code == 2 and "--intrinsics" in r.output
    r = run(d / "color.png", d / "depth.png", "--intrinsics", d / "K.json", "--scan", d / "x.obj")
    assert r.exit_code == 2 and "not both" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written for a failed registration


def test_scan_in_arbitrary_units_is_registered_in_its_own_units(ict_prepared):
    """A scan given in unknown units (here the model's own mean head at 1/100 scale) is registered as a
    copy scaled to an adult's size and the result is returned in the scan's units."""
    from fitter.registration.register import register_scan, scan_distances
    from fitter.registration.scan import Scan

    m = ict_prepared.model
    F = ict_prepared.render_faces
    scan = Scan(V=m.mean * 0.01, F=F, colors=ict_prepared.painted_albedo)  # painted: brows, lips, irises
    reg, _ = register_scan(ict_prepared, scan, n_points=40_000)
    assert 80 < reg.report["scan_scaled_by"] < 125
    nose = m.mean[m.metadata["reference_landmarks_68"][30]] * 0.01
    # scored on the outer skin (the eyeballs, teeth and mouth socket of the "scan" are no face surface)
    d, covered = scan_distances(reg.vertices, m, scan.V, m.faces_in("outer_skin"), nose, crop_mm=0.95)
    assert covered > 0.5 and np.median(d) < 0.005  # 0.5 mm in the scan's 1/100 scale
    f, R, t, S = split_similarity(m, reg.vertices)
    assert abs(f - 0.01) < 0.002  # the similarity carries the scan's scale
