"""The batch commands (`video`, `micc`, `fit --same-person`, `register`, `augment`, `dataset build`) under bad
input and faults, as a careful user meets them: one line, the documented exit code, nothing half-written,
no debris, and a folder whose manifest says what it holds."""
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import SHARED, need

CLI = [sys.executable, "-m", "fitter.cli.main"]


def _run(*args, timeout=600):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _one_line_error(p, code, says):
    assert p.returncode == code, (p.returncode, p.stderr)
    assert says in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len([l for l in p.stderr.splitlines() if l.startswith(("facefit: error", "Error:"))]) == 1, p.stderr


def _subject(truth, kind):
    return next(s for s, t in truth.items() if t["kind"] == kind)


def test_a_rerun_with_other_options_recomputes_and_the_folder_says_so(ict_model, mini_micc, tmp_path):
    root, truth = mini_micc
    video = root / _subject(truth, "synthetic") / "Video" / "PTZ-Outdoor.mjpg"
    out = tmp_path / "v"
    p = _run("video", video, video, "-o", out, "--no-refine")  # the same video twice: once
    assert p.returncode == 0, p.stderr
    assert "given more than once: reconstructed once" in p.stderr and "\r" not in p.stderr  # no bar into a file
    assert [d.name for d in out.iterdir() if d.is_dir() and d.name != "report_files"] == ["PTZ-Outdoor"]
    first = json.loads((out / "PTZ-Outdoor" / "params.json").read_text())
    p = _run("video", video, "-o", out, "--no-refine", "--stride", "2", "--per-bin", "1")
    assert p.returncode == 0, p.stderr
    assert "made with other options" in p.stderr and "per_bin: 2 -> 1" in p.stderr and "recomputed" in p.stderr
    done = json.loads((out / "PTZ-Outdoor" / "DONE.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"][0]["args"] == done["args"] and done["args"]["stride"] == 2
    params = json.loads((out / "PTZ-Outdoor" / "params.json").read_text())
    assert params["frames"]["scanned"] > first["frames"]["scanned"]  # every 2nd frame, not ~6 per second
    assert params["frames"]["fitted"] <= 9  # one per yaw bin
    p = _run("video", video, "-o", out, "--no-refine", "--stride", "2", "--per-bin", "1")
    assert p.returncode == 0 and "0 done, 1 already done" in p.stderr, p.stderr


def test_a_damaged_frame_in_a_folder_is_skipped_and_recorded(ict_model, mini_micc, tmp_path):
    import cv2

    root, truth = mini_micc
    cap = cv2.VideoCapture(str(root / _subject(truth, "synthetic") / "Video" / "Indoor-Cooperative.mjpg"))
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(0, 50, 4):
        cap.set(cv2.CAP_PROP_POS_FRAMES, k)
        ok, bgr = cap.read()
        if ok:
            cv2.imwrite(str(frames / f"{k:03d}.jpg"), bgr)
    (frames / "021.jpg").write_bytes(b"not a jpeg")
    p = _run("video", frames, "-o", tmp_path / "v", "--no-refine")
    assert p.returncode == 0, p.stderr
    scanned = json.loads((tmp_path / "v" / "frames" / "params.json").read_text())["scanned"]
    bad = [r for r in scanned if r["status"] == "unreadable"]
    assert len(bad) == 1 and "021.jpg is not a readable image" in bad[0]["reason"]
    assert sum(r["status"] == "kept" for r in scanned) >= 4


def test_sigterm_mid_batch_leaves_no_debris_and_a_true_status(ict_model, mini_micc, tmp_path):
    root, truth = mini_micc
    videos = [root / s / "Video" / "Indoor-Cooperative.mjpg" for s in (_subject(truth, "synthetic"),
                                                                        _subject(truth, "scan"))]
    copies = []
    for k, v in enumerate(videos + videos):
        copies.append(tmp_path / f"clip{k}.mjpg")
        shutil.copy(v, copies[-1])
    out = tmp_path / "v"
    proc = subprocess.Popen([*CLI, "video", *map(str, copies), "-o", str(out), "--workers", "0", "--no-refine"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 300 and not list(out.glob("*/DONE.json")) and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the batch ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert "terminated" in proc.stderr.read()
    done = {p.parent.name for p in out.glob("*/DONE.json")}
    assert done and len(done) < 4, "the stop was not mid-run"
    assert not (out / ".partial").exists()
    status = json.loads((out / "status.json").read_text())
    assert {k for k, v in status.items() if v["status"] == "done"} == done
    assert {d.name for d in out.iterdir() if d.is_dir()} == done  # no half-written item folder


def test_micc_subjects_and_settings(ict_model, mini_micc, tmp_path):
    root, truth = mini_micc
    sid = _subject(truth, "synthetic")
    out = tmp_path / "m"
    for args, says in ((["--subjects", "abc"], "'abc' is not a subject"),
                       (["--settings", ""], "--settings: give one or more"),
                       (["--settings", "Outdoor"], "unknown MICC setting 'Outdoor'"),
                       (["--subjects", "99"], "has no subject_99 (it holds subject_")):
        _one_line_error(_run("micc", root, "-o", out, *args), 2, says)
    assert not out.exists()
    p = _run("micc", root, "-o", out, "--subjects", f"{sid[-2:]},99", "--settings",
             "Indoor-Cooperative,Indoor-Cooperative", "--gt-landmarks", root / "gt_landmarks", "--no-refine")
    assert p.returncode == 4, p.stderr  # a subject asked for is not there: not every video was scored
    assert "not scored: subject_99: no subject_99 folder" in p.stderr and "more than once" in p.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["subject"], r["setting"], r["status"]) for r in rows] == [(sid, "Indoor-Cooperative", "done"),
                                                                        ("subject_99", "", "missing")]
    header = next(l for l in (out / "summary.md").read_text().splitlines() if l.startswith("| method"))
    assert header.count("Indoor-Cooperative") == 1


def test_scheduler_mistakes_are_usage_errors_before_anything_is_written(ict_model, mini_micc, tmp_path):
    root, truth = mini_micc
    video = root / _subject(truth, "synthetic") / "Video" / "PTZ-Outdoor.mjpg"
    (tmp_path / "bad.json").write_text("not json")
    out = tmp_path / "v"
    for args, says in ((["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "not both"),
                       (["--scheduler", "tcp://127.0.0.1:9"], "connection refused"),
                       (["--scheduler", tmp_path / "nonexist.json"], "no such scheduler file"),
                       (["--scheduler", tmp_path / "bad.json"], "not a Dask scheduler file")):
        t0 = time.perf_counter()
        _one_line_error(_run("video", video, "-o", out, *args), 2, says)
        assert time.perf_counter() - t0 < 60  # said at once, not after a connection timeout
        assert not out.exists()


def test_register_input_errors(ict_model, tmp_path):
    import numpy as np

    color = tmp_path / "color.png"
    import cv2

    cv2.imwrite(str(color), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "K.json").write_text(json.dumps({"fx": 60, "fy": 60, "cx": 32, "cy": 32}))
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "depth.npy", np.full((64, 64), 500.0))
    out = tmp_path / "r"
    _one_line_error(_run("register", color, tmp_path / "empty.npy", "--intrinsics", tmp_path / "K.json", "-o", out),
                    2, "empty.npy: not a numeric .npy array")
    for scale in ("-1", "nan", "0"):
        _one_line_error(_run("register", color, tmp_path / "depth.npy", "--intrinsics", tmp_path / "K.json", "-o",
                             out, "--depth-scale", scale), 2, "the depth scale must be a positive number")
    scan = need(SHARED / "data" / "scan-meshmonk" / "DemoFace_10K.obj", "MeshMonk's scan")
    _one_line_error(_run("register", "--scan", scan, "--scan-units", "m", "-o", out), 2,
                    "not the size of a head (50-2500 mm); its size says mm: give --scan-units mm")
    lines = scan.read_text().splitlines()
    last_v = max(k for k, l in enumerate(lines) if l.startswith("v "))
    (tmp_path / "cut.obj").write_text("\n".join(lines[:last_v]) + "\n" + lines[last_v][:10])
    _one_line_error(_run("register", "--scan", tmp_path / "cut.obj", "-o", out), 2, "the file looks cut short")
    assert not out.exists()


def test_obj_vertex_lines_with_colours_are_read():
    import numpy as np

    from fitter.geometry.mesh import read_obj

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.obj"
        p.write_text("v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 0 1 0 0 0 1\nf 1 2 3\n")
        m = read_obj(p)
        assert np.allclose(m.V, [[0, 0, 0], [1, 0, 0], [0, 1, 0]]) and m.F.tolist() == [[0, 1, 2]]


def test_implausible_options_are_said_before_or_at_the_first_frame(ict_model, mini_micc, tmp_path):
    root, truth = mini_micc
    video = root / _subject(truth, "synthetic") / "Video" / "PTZ-Outdoor.mjpg"
    p = _run("video", video, "-o", tmp_path / "a", "--focal", "1e9")
    assert p.returncode == 3 and "a focal length of 1e+09 px is implausible for a 640x480 image" in p.stderr, p.stderr
    assert "OpenCV" not in p.stderr
    _one_line_error(_run("video", video, "-o", tmp_path / "b", "--texture-size", "0"), 2, "--texture-size")
    _one_line_error(_run("video", video, video, "-o", tmp_path / "c", "--model", "nomodel", "--workers", "2"), 2,
                    "model 'nomodel' is not installed")  # once, before the batch, not once per video
    assert not (tmp_path / "c").exists()


def test_focal_and_principal_point_checks(tmp_path):
    import numpy as np
    import pytest

    from fitter.errors import InputError
    from fitter.photo.coarse import check_focal_for_image
    from fitter.registration.register import check_intrinsics, read_intrinsics

    for text in ('{"K": [["a", 0, 1], [0, 1, 1], [0, 0, 1]]}', '{"fx": "wide", "fy": 1, "cx": 1, "cy": 1}'):
        (tmp_path / "K.json").write_text(text)
        with pytest.raises(InputError, match="must be numbers"):
            read_intrinsics(tmp_path / "K.json")

    check_focal_for_image(None, (640, 480))
    check_focal_for_image(800.0, (640, 480))
    for f in (10.0, 2e4):
        with pytest.raises(InputError, match="implausible for a 640x480 image"):
            check_focal_for_image(f, (640, 480))
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    check_intrinsics(K, (480, 640, 3))
    K[0, 2] = 10000
    with pytest.raises(InputError, match="outside the 640x480 colour image"):
        check_intrinsics(K, (480, 640, 3))


def test_an_output_folder_inside_the_captures_root_is_not_a_capture(tmp_path):
    from fitter.augment.dataset import find_captures

    for name in ("cap_a", "cap_b", "out", "older_run"):
        (tmp_path / name).mkdir()
    (tmp_path / "older_run" / "manifest.json").write_text("{}")
    assert [n for n, _ in find_captures(tmp_path, tmp_path / "out")] == ["cap_a", "cap_b"]
