"""Dataset construction: `facefit register` → `facefit augment`, and `facefit dataset build` over a folder
of captures (synthetic RGB-D pairs written by the test, one broken, one whose depth is off its colour):
failures, rejections, the sample layout, 300W-LP files, and a SIGKILL mid-run then a rerun."""
import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest


CLI = [sys.executable, "-m", "fitter.cli.main"]
LABEL_KEYS = {"image_size", "K", "R", "t", "scale", "source_to_sample", "yaw_delta", "pitch_delta", "yaw", "pitch",
              "roll", "model", "identity", "expression", "s_morph", "landmarks_68", "visible_68", "landmarks_478",
              "visible_478", "face_box", "invented_fraction"}


@pytest.fixture(scope="module")
def captures_root(ict_prepared, tmp_path_factory):
    from fitter.bench.augment import write_rgbd_capture
    from fitter.bench.synthetic import synthetic_rgbd

    root = tmp_path_factory.mktemp("captures")
    for name, seed, shift in (("syn_a", 1, 0), ("syn_b", 2, 0), ("misaligned", 5, 20)):
        write_rgbd_capture(root / name, synthetic_rgbd(ict_prepared, np.random.default_rng(seed), occluders=False), shift)
    broken = root / "broken"
    broken.mkdir()
    (broken / "color.png").write_bytes(b"not a png")
    np.save(broken / "depth.npy", np.zeros((4, 4)))
    (broken / "intrinsics.json").write_text("{}")
    return root


def _build(root, out, *extra, wait=True):
    cmd = [*CLI, "dataset", "build", str(root), "-o", str(out), "--yaws", "0,30", "--pitches", "0", "--workers", "0",
           *extra]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _index(out):
    with open(out / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_dataset_build_fails_rejects_and_augments(captures_root, tmp_path):
    from scipy.io import loadmat

    out = tmp_path / "ds"
    p = _build(captures_root, out, "--format", "300wlp")
    assert p.returncode == 4, p.stderr  # some captures failed (the broken one), not all
    status = json.loads((out / "status.json").read_text())
    assert status["broken"]["status"] == "failed" and "not a readable image" in status["broken"]["reason"]
    with open(out / "rejected.csv", newline="") as f:
        rejected = list(csv.DictReader(f))
    assert [r["capture"] for r in rejected] == ["misaligned"]
    assert "lift_residual_mm" in rejected[0]["reason"]
    assert not list((out / "misaligned").glob("*.jpg"))  # a rejected capture gives no samples
    rows = _index(out)
    assert sorted(r["sample"] for r in rows) == ["syn_a_0_0", "syn_a_30_0", "syn_b_0_0", "syn_b_30_0"]
    for r in rows:
        stem = out / r["capture"] / r["sample"]
        labels = json.loads(stem.with_suffix(".json").read_text())
        assert LABEL_KEYS <= set(labels)
        assert len(labels["landmarks_68"]) == 68 and len(labels["visible_478"]) == 478
        assert labels["s_morph"].startswith("registration/s_morph.npz sha256:")
        arrays = np.load(stem.with_suffix(".npz"))
        assert arrays["invented"].shape == (480, 640) and arrays["invented"].dtype == bool
        assert abs(arrays["invented"].mean() - labels["invented_fraction"]) < 1e-6
        mat = loadmat(stem.with_suffix(".mat"))
        assert mat["pt2d"].shape == (2, 68) and mat["roi"].shape == (1, 4) and mat["Pose_Para"].shape == (1, 7)
        assert np.allclose(mat["pt2d"].T, labels["landmarks_68"], atol=1e-3)
        assert np.allclose(np.degrees(mat["Pose_Para"][0, :3]), [labels["pitch"], labels["yaw"], labels["roll"]],
                           atol=1e-3)
        assert (out / r["image"]).is_file()
    assert (out / "syn_a" / "contact_sheet.png").is_file()
    assert (out / "syn_a" / "registration" / "capture.json").is_file()


def _done(out):
    return {p.parent.name: p.read_bytes() for p in out.glob("*/DONE.json")}


def test_dataset_build_killed_and_rerun(captures_root, tmp_path):
    out = tmp_path / "ds"
    proc = _build(captures_root, out, wait=False)
    t0 = time.time()
    while time.time() - t0 < 300 and not _done(out) and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the build ended before it could be killed mid-run"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    first = _done(out)
    assert first and len(first) < 3, "the kill was not mid-run"
    p = _build(captures_root, out)
    assert p.returncode == 4, p.stderr
    done = _done(out)
    assert set(done) == {"syn_a", "syn_b", "misaligned"}
    assert all(done[k] == v for k, v in first.items())  # finished captures were not redone
    names = [r["sample"] for r in _index(out)]
    assert len(names) == len(set(names)) == 4  # no duplicates
    for d in (out / "syn_a", out / "syn_b"):  # no half-written sample: each image has its labels and arrays
        for jpg in d.glob("*.jpg"):
            assert jpg.with_suffix(".json").is_file() and jpg.with_suffix(".npz").is_file()
        assert len(list(d.glob("*.jpg"))) == 2
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())


def test_register_then_augment(captures_root, tmp_path):
    reg = tmp_path / "reg"
    c = captures_root / "syn_b"
    p = subprocess.run([*CLI, "register", str(c / "color.png"), str(c / "depth.npy"), "--intrinsics",
                        str(c / "intrinsics.json"), "-o", str(reg)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    spec = json.loads((reg / "capture.json").read_text())
    assert spec["kind"] == "rgbd" and spec["color"] == str((c / "color.png").resolve())
    out = tmp_path / "aug"
    p = subprocess.run([*CLI, "augment", str(reg), "-o", str(out), "--yaws", "0,-45", "--pitches", "10", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["samples"] == 2
    rows = _index(out)
    assert sorted(r["sample"] for r in rows) == ["reg_-45_10", "reg_0_10"]
    lab = json.loads((out / "reg" / "reg_-45_10.json").read_text())
    assert abs(lab["yaw_delta"] + 45) < 1e-9 and lab["s_morph"].endswith(
        __import__("fitter.model.store", fromlist=["x"]).sha256_file(reg / "s_morph.npz"))
    # bad input: one line, non-zero exit
    p = subprocess.run([*CLI, "augment", str(tmp_path), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "facefit register" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([*CLI, "augment", str(reg), "-o", str(out), "--pitches", "40"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "--pitches" in p.stderr and "Traceback" not in p.stderr


def test_find_capture_says_what_is_missing(tmp_path):
    from fitter.errors import InputError
    from fitter.registration.capture import find_capture

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "color.png").write_bytes(b"x")
    with pytest.raises(InputError, match="intrinsics.json"):
        find_capture(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(InputError, match="one scan file"):
        find_capture(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "head.obj").write_text("v 0 0 0\n")
    (tmp_path / "c" / "texture.png").write_bytes(b"x")
    spec = find_capture(tmp_path / "c")
    assert spec.kind == "scan" and spec.scan.endswith("head.obj") and spec.texture.endswith("texture.png")


def test_angles_and_quality_thresholds():
    from fitter.augment.dataset import parse_angles, quality_failure
    from fitter.errors import InputError

    assert parse_angles("-90:90:15", "--yaws", 90) == tuple(float(v) for v in range(-90, 91, 15))
    assert parse_angles("0,15,15", "--yaws", 90) == (0.0, 15.0)
    for bad in ("", "a,b", "0:10:0", "100"):
        with pytest.raises(InputError):
            parse_angles(bad, "--yaws", 90)
    good = {"lift_residual_mm": 1.2, "drift_iod": 0.01, "landmark_error_iod": 0.015, "inlier_fraction": 0.6,
            "median_residual_mm": 0.7}
    assert quality_failure(good) is None
    assert "lift_residual_mm" in quality_failure(dict(good, lift_residual_mm=7.1))
    assert "inlier_fraction" in quality_failure(dict(good, inlier_fraction=0.1))
    assert "missing" in quality_failure({})


def test_dataset_build_gives_the_same_bytes_in_every_worker_mode(captures_root, tmp_path):
    """In this process (--workers 0) and on two worker processes: the same samples and registrations, byte for
    byte (the command's own process is held to one thread like a worker: BLAS sums and llvmpipe's rasterising
    change with the thread count)."""
    one, two = tmp_path / "w0", tmp_path / "w2"
    assert _build(captures_root, one).returncode == 4
    cmd = [*CLI, "dataset", "build", str(captures_root), "-o", str(two), "--yaws", "0,30", "--pitches", "0",
           "--workers", "2"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=900).returncode == 4
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and "report_files" not in p.parts
                   and p.suffix in (".jpg", ".json", ".npz", ".mat", ".obj", ".csv")
                   and p.name not in ("DONE.json", "status.json", "report.json", "manifest.json"))
    assert len([f for f in files if f.suffix == ".jpg"]) == 4 and any(f.name == "s_morph.npz" for f in files)
    different = [str(f) for f in files if (one / f).read_bytes() != (two / f).read_bytes()]
    assert not different, different


def test_damaged_registrations_and_angle_counts_are_input_errors(ict_model, tmp_path):
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "report.json").write_text("{}")
    (reg / "capture.json").write_text('{"kind": "rgbd"}')
    (reg / "s_morph.npz").write_bytes(b"PK\x03\x04 cut short")
    cases = [(["augment", str(tmp_path / "nothere")], "no such folder"),
             (["augment", str(reg)], "s_morph.npz: damaged"),
             (["augment", str(reg), "--yaws=-60:60:1e-9"], "at most 361"),
             (["dataset", "build", str(tmp_path), "--yaws=-60:60:1e-9"], "at most 361")]
    import numpy as np

    for args, says in cases:
        p = subprocess.run([*CLI, *args, "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    def augment():
        return subprocess.run([*CLI, "augment", str(reg), "-o", str(tmp_path / "out")], capture_output=True,
                              text=True, timeout=300)

    np.savez(reg / "s_morph.npz", s_morph=np.zeros((3, 3)))  # readable, but not a registration's
    p = augment()
    assert p.returncode == 2 and "s_morph.npz: lacks f, R, t, model" in p.stderr, p.stderr
    np.savez(reg / "s_morph.npz", s_morph=np.zeros((3, 3)), f=1.0, R=np.eye(3), t=np.zeros(3), model="ict",
             model_sha256=ict_model.metadata.get("model_sha256"))
    (reg / "capture.json").write_text("{not json")
    p = augment()
    assert p.returncode == 2 and "capture.json: damaged or not JSON" in p.stderr, p.stderr
    (reg / "capture.json").write_text('{"kind": "rgbd"}')
    p = augment()
    assert p.returncode == 2 and "arrays of the wrong shape" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()
