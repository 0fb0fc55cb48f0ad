"""`facefit fit` on real photos: outputs, their consistency, and the error paths."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from conftest import PHOTOS, need
from fitter.geometry.mesh import read_obj
from fitter.io import read_image


@pytest.fixture(scope="module")
def fitted(ict_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    photo = need(PHOTOS / "whitehouse_obama.jpg", "photo")
    r = CliRunner().invoke(cli, ["fit", str(photo), "-o", str(out), "--json", "--texture-size", "512"])
    assert r.exit_code == 0, r.output
    return out / "whitehouse_obama", json.loads(r.output.strip().splitlines()[-1])


def test_outputs_are_complete_and_consistent(fitted, ict_model):
    d, summary = fitted
    assert summary["ok"] and summary["landmark_error_iod"] < 0.03
    for name in ("mesh.obj", "mesh.mtl", "texture.png", "params.json", "overlay.png", "landmarks.json"):
        assert (d / name).is_file(), name
    params = json.loads((d / "params.json").read_text())
    mesh = read_obj(d / "mesh.obj")
    assert mesh.V.shape == (ict_model.n_vertices, 3) and len(mesh.F) == len(ict_model.faces)
    K = np.array(params["camera"]["K"])
    # the mesh is written in the camera frame: projecting it with K lands the fitted landmarks
    lm = json.loads((d / "landmarks.json").read_text())
    detected = np.array(lm["detected"]["points"])
    nose_tip = ict_model.metadata["reference_landmarks_68"][30]
    p = K @ mesh.V[nose_tip]
    uv = p[:2] / p[2]
    assert np.linalg.norm(uv - detected[4]) < 0.1 * params["landmarks"]["interocular_px"]  # MediaPipe 4: nose tip
    assert mesh.V[:, 2].min() > 100  # in front of the camera, mm
    tex = read_image(d / "texture.png")
    assert tex.shape == (512, 512, 3)
    assert params["lighting"]["rms_sh"] < 0.1
    assert set(params["expression"]) == set(ict_model.expression_names)
    # the default stages are coarse + medium + fine, each with its time and error figures
    assert params["stages"]["fine"]["seconds"] > 0
    medium = params["stages"]["medium"]
    assert params["stages"]["coarse"]["seconds"] > 0 and medium["seconds"] > 0
    assert medium["active_landmarks"] > 300 and medium["error_after_px"] <= medium["error_before_px"] + 0.05
    assert all(0 <= v <= 1 for v in params["expression"].values())


def test_error_paths_one_line_and_others_still_fitted(ict_model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((120, 160, 3), 200, np.uint8))
    good = need(PHOTOS / "skimage_astronaut.png", "photo")
    r = CliRunner().invoke(cli, ["fit", str(bad), str(tmp_path), str(blank), str(good), "-o", str(tmp_path / "o")])
    assert r.exit_code == 4  # some failed, some fitted
    lines = [l for l in r.output.splitlines() if l.startswith("facefit:")]
    assert len(lines) == 3 and "Traceback" not in r.output
    assert "not a readable image" in lines[0] and "directory" in lines[1] and "no face found" in lines[2]
    assert (tmp_path / "o" / "skimage_astronaut" / "mesh.obj").is_file()
    r = CliRunner().invoke(cli, ["fit", str(blank), "-o", str(tmp_path / "o2")])
    assert r.exit_code == 3  # everything failed
    r = CliRunner().invoke(cli, ["fit", str(good), "--stages", "coarse,bogus", "-o", str(tmp_path / "o3")])
    assert r.exit_code != 0 and "unknown stage" in r.output


def test_overlay_draws_only_the_face_and_the_preview_has_four_panels(fitted):
    """overlay.png changes the photo only on the face (and the landmarks on it): not the hair, neck or
    collar; preview.png is photo | overlay | three-quarter shape | textured."""
    d, _ = fitted
    photo = read_image(need(PHOTOS / "whitehouse_obama.jpg", "photo")).astype(int)
    over = read_image(d / "overlay.png").astype(int)
    lm = np.array(json.loads((d / "landmarks.json").read_text())["detected"]["points"])
    lo, hi = lm.min(0), lm.max(0)
    pad = 0.1 * (hi - lo)
    H, W = photo.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    near_face = (xx > lo[0] - pad[0]) & (xx < hi[0] + pad[0]) & (yy > lo[1] - pad[1]) & (yy < hi[1] + pad[1])
    caption = yy < 60
    changed = np.abs(over - photo).max(axis=2) > 12
    assert changed[near_face].mean() > 0.3                      # the face is drawn over
    assert changed[~near_face & ~caption].mean() < 0.002        # nothing else is
    preview = read_image(d / "preview.png")
    h, w = preview.shape[:2]
    assert w == 4 * h and h >= 256
    tiles = [preview[:, i * h:(i + 1) * h].astype(int) for i in range(4)]
    assert np.abs(tiles[0] - tiles[1]).max(axis=2).mean() > 5   # the overlay differs from the photo crop
    assert (np.abs(tiles[2] - tiles[3]).max(axis=2) > 20).mean() > 0.05  # the texture changes the shaded view


def test_a_large_photo_is_fitted_on_a_bounded_copy(ict_prepared, tmp_path, monkeypatch):
    """Above WORK_MAX_PIXELS the stages run on an area-averaged copy; what is written maps back onto the
    photo: its size, K in its pixels (the mesh's nose tip projects onto the detected nose tip), landmarks
    in its pixels, and the overlay at the copy's bounded size."""
    from fitter.photo import pipeline

    photo = need(PHOTOS / "whitehouse_obama.jpg", "photo")  # 910 x 1137
    full = pipeline.fit_photo(photo, ict_prepared, ("coarse",), texture_size=128)[0]  # on the photo itself
    monkeypatch.setattr(pipeline, "WORK_MAX_PIXELS", 250_000)
    (r,) = pipeline.fit_photo(photo, ict_prepared, ("coarse",), texture_size=128)
    assert r.working.scale[0] < 0.5 and r.fit.camera.width * r.fit.camera.height <= 250_000
    d = pipeline.write_result(r, ict_prepared, tmp_path)
    params = json.loads((d / "params.json").read_text())
    assert params["image_size"] == [910, 1137]
    K = np.array(params["camera"]["K"])
    assert abs(K[0, 2] - 454.5) < 0.01 and abs(K[1, 2] - 568.0) < 0.01
    detected = np.array(json.loads((d / "landmarks.json").read_text())["detected"]["points"])
    assert detected[:, 0].max() > 500  # photo pixels, not the copy's
    V = read_obj(d / "mesh.obj").V
    p = K @ V[ict_prepared.model.metadata["reference_landmarks_68"][30]]
    assert np.linalg.norm(p[:2] / p[2] - detected[4]) < 0.05 * full.landmarks.interocular()
    assert np.linalg.norm(detected - full.landmarks.points, axis=1).mean() < 0.01 * full.landmarks.interocular() + 3
    assert read_image(d / "overlay.png").shape[:2] == (r.fit.camera.height, r.fit.camera.width)
