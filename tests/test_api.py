"""The Python API: the README's "Python" section runs as written, and so does each example script."""
import re
import subprocess
import sys

import pytest

from conftest import PHOTOS, REPO, SHARED, need


def run_python(args, cwd, timeout=300):
    out = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_readme_python_section_runs_as_written(ict_model, tmp_path):
    need(PHOTOS / "whitehouse_obama.jpg", "photo")
    need(SHARED / "data" / "scan-meshmonk" / "DemoFace_10K.obj", "MeshMonk scan")
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python"):text.index("## Conventions")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # the section's relative paths are from the repository root; its outputs go to a temporary folder
    code = code.replace('"../shared/', f'"{SHARED}/').replace('"out_api"', f'"{tmp_path / "out_api"}"')
    lines = run_python(["-c", code], cwd=REPO).strip().splitlines()
    error_px, focal, shape = lines[0].split(" ", 2)
    assert float(error_px) < 5 and float(focal) > 100 and shape == "(26719, 3)"
    assert (tmp_path / "out_api" / "whitehouse_obama" / "mesh.obj").is_file()
    residuals, micc = lines[-1].rsplit(" ", 1)
    assert float(micc) < 1.5  # mm, MICC protocol: the registered face against its scan (the mean face: 2.3)


def test_example_fit_photo(ict_model, tmp_path):
    photo = need(PHOTOS / "skimage_astronaut.png", "photo")
    out = run_python([REPO / "examples" / "api_fit_photo.py", photo, "-o", tmp_path], cwd=tmp_path)
    assert "landmark error" in out and (tmp_path / "skimage_astronaut" / "preview.png").is_file()


def test_example_register_rgbd_on_a_synthetic_capture(ict_model, tmp_path):
    out = run_python([REPO / "examples" / "api_register_rgbd.py", "--seed", "7"], cwd=tmp_path)
    median = float(re.search(r"median error on the visible face: ([\d.]+) mm", out).group(1))
    assert median < 2.5


def test_example_augment_on_a_synthetic_capture(ict_model, tmp_path):
    out = run_python([REPO / "examples" / "api_augment.py", "--seed", "7", "-o", tmp_path / "ds"], cwd=tmp_path)
    errors = [float(e) for e in re.findall(r"label error ([\d.]+) % IOD", out)]
    assert len(errors) == 5 and max(errors) < 2.5  # % of the interocular distance (median 1.2-1.4 % measured)
    assert "yaw  +0: face yaw" in out and (tmp_path / "ds" / "index.csv").read_text().count("\n") == 4


def test_examples_register_scan_and_evaluate(ict_model, tmp_path):
    scan = need(SHARED / "data" / "scan-meshmonk" / "DemoFace_10K.obj", "MeshMonk scan")
    out = run_python([REPO / "examples" / "api_register_scan.py", scan, "-o", tmp_path / "reg"], cwd=tmp_path)
    assert float(re.search(r"MICC error scan -> registered face: ([\d.]+) mm", out).group(1)) < 1.5
    out = run_python([REPO / "examples" / "api_evaluate.py", tmp_path / "reg" / "registered.obj", scan], cwd=tmp_path)
    recon, mean = (float(x) for x in re.findall(r"MICC error ([\d.]+) mm", out))
    assert recon < 0.6 * mean  # the registration is far closer to the scan than the mean face (1.07 / 2.31)


def test_example_video(ict_model, mini_micc, tmp_path):
    root, truth = mini_micc
    sid = next(s for s, t in truth.items() if t["kind"] == "synthetic")
    out = run_python([REPO / "examples" / "api_video.py", root / sid / "Video" / "Indoor-Cooperative.mjpg", "-o",
                      tmp_path], cwd=tmp_path)
    fitted = re.findall(r"landmark error ([\d.]+) % of interocular", out)
    assert len(fitted) >= 4 and max(float(e) for e in fitted) < 6
    assert (tmp_path / "Indoor-Cooperative" / "identity.obj").is_file() and "fitted ->" in out


@pytest.mark.parametrize("name", ["fit_photo", "register_rgbd", "register_scan", "evaluate_mesh", "PreparedModel",
                                  "reconstruct_video", "reconstruct_photos", "write_multiview", "run_batch"])
def test_entry_points_are_exported_and_documented(name):
    import fitter

    assert name in fitter.__all__ and getattr(fitter, name).__doc__
