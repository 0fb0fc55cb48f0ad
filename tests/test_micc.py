"""MICC Florence (fitter.datasets.micc): layout, the batch through `facefit micc`, its report, resuming
after SIGKILL."""
import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fitter.datasets.micc import find_layout, read_ljson
from fitter.errors import InputError


def test_layout_reports_what_is_missing(tmp_path):
    (tmp_path / "subject_01" / "Video").mkdir(parents=True)
    (tmp_path / "subject_01" / "Video" / "Indoor-Cooperative.mjpeg").write_bytes(b"x")
    (tmp_path / "subject_01" / "Video" / "PTZ-Indoor.txt").write_bytes(b"x")   # not a video
    (tmp_path / "subject_01" / "Model" / "frontal2" / "obj").mkdir(parents=True)
    (tmp_path / "subject_01" / "Model" / "frontal2" / "obj" / "a.obj").write_text("v 0 0 0\n")
    (tmp_path / "subject_02" / "Video").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    lay = find_layout(tmp_path)
    assert [s.id for s in lay.subjects] == ["subject_01"]
    s = lay.subjects[0]
    assert list(s.videos) == ["Indoor-Cooperative"] and list(s.scans) == ["frontal2"]
    reasons = {(p[0], p[1]) for p in lay.problems}
    assert ("subject_01", "PTZ-Indoor") in reasons and ("subject_02", "PTZ-Outdoor") in reasons
    lay = find_layout(tmp_path, settings=("PTZ-Outdoor",), subjects=["1", "subject_07"])
    assert lay.subjects == [] and ("subject_07", "", f"no subject_07 folder in {tmp_path}") in lay.problems
    with pytest.raises(InputError, match="has no subject_07, subject_09 \\(it holds subject_01, subject_02\\)"):
        find_layout(tmp_path, subjects=["7", "subject_09"])
    with pytest.raises(InputError, match="'abc' is not a subject"):
        find_layout(tmp_path, subjects=["abc"])
    with pytest.raises(InputError, match="unknown MICC setting"):
        find_layout(tmp_path, settings=("Outdoor",))
    with pytest.raises(InputError, match="no subject_XX"):
        find_layout(tmp_path / "notes")


def test_ljson(tmp_path):
    p = tmp_path / "a.ljson"
    p.write_text(json.dumps({"landmarks": {"points": np.arange(204).reshape(68, 3).tolist()}}))
    assert read_ljson(p)[30].tolist() == [90, 91, 92]
    p.write_text(json.dumps({"landmarks": {"points": [[0, 0, 0]]}}))
    with pytest.raises(InputError, match="68"):
        read_ljson(p)


def _run_micc(root, out, *extra, wait=True):
    cmd = [sys.executable, "-m", "fitter.cli.main", "micc", str(root), "-o", str(out), "--gt-landmarks",
           str(root / "gt_landmarks"), *extra]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _done_markers(out):
    return {p.parent.relative_to(out).as_posix(): p.read_bytes() for p in out.glob("subject_*/*/DONE.json")}


def test_micc_batch_killed_and_resumed(ict_prepared, mini_micc, tmp_path):
    root, truth = mini_micc
    out = tmp_path / "out"
    proc = _run_micc(root, out, "--workers", "2", wait=False)
    t0 = time.time()
    while time.time() - t0 < 300 and not _done_markers(out) and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the batch ended before it could be killed mid-run"
    proc.send_signal(signal.SIGKILL)  # mid-run: at least one video done, others in flight
    assert proc.wait() == -signal.SIGKILL
    first = _done_markers(out)
    assert first, "no video had finished when the batch was killed"
    assert len(first) < 6, "every video had finished: the kill was not mid-run"
    time.sleep(1.0)
    p = _run_micc(root, out, "--workers", "2")
    assert p.returncode == 4, p.stderr  # some videos cannot be scored: the corrupt one, the scanless subject
    done = _done_markers(out)
    assert len(done) == 6
    assert all(done[k] == v for k, v in first.items())  # finished videos were not redone
    assert not any((out / ".partial").iterdir()) if (out / ".partial").exists() else True
    for d in out.glob("subject_*/*"):  # nothing half-written: every item folder is complete
        assert (d / "DONE.json").is_file() and (d / "identity.obj").is_file() and (d / "distance.png").is_file()
    rows = list(csv.DictReader(open(out / "results.csv")))
    by = {(r["subject"], r["setting"]): r for r in rows}
    scan_s, synth_s = (next(s for s, t in truth.items() if t["kind"] == k) for k in ("scan", "synthetic"))
    scanless = next(s for s, t in truth.items() if t["kind"] == "no scans")
    corrupt = next(s for s, t in truth.items() if t["kind"] == "corrupt video")
    for sid in (scan_s, synth_s):
        for setting in ("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor"):
            r = by[(sid, setting)]
            assert r["status"] == "done" and 0.2 < float(r["mean_mm"]) < 6.0 and int(r["frames_kept"]) >= 2
    assert by[(scanless, "PTZ-Indoor")]["status"] == "failed" and "no frontal scan" in by[(scanless, "PTZ-Indoor")]["reason"]
    assert by[(corrupt, "Indoor-Cooperative")]["status"] == "failed"
    assert "no frame could be decoded" in by[(corrupt, "Indoor-Cooperative")]["reason"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"]["done"] == 6 and summary["per_setting"]["mean_mm"]["PTZ-Outdoor"]["n"] == 2
    md = (out / "summary.md").read_text()
    assert "GANFit (S4 Table 1)" in md and "Deng et al. (S3 Table 2)" in md and "no frontal scan" in md
    import cv2

    assert cv2.imread(str(out / "boxplot.png")).shape[0] > 200
    # the synthetic identity (exact truth): the video reconstruction beats the mean face by the protocol
    from fitter.datasets.micc import load_scans, score_against_scans

    scans = [{"name": k, "path": str(next((root / synth_s / "Model" / k / "obj").glob("*.obj"))),
              "landmarks": str(root / "gt_landmarks" / synth_s / f"{k}.ljson")} for k in ("frontal1", "frontal2")]
    mean_face = score_against_scans(ict_prepared, ict_prepared.model.mean, load_scans(scans))[1]["mean_mm"]
    assert float(by[(synth_s, "Indoor-Cooperative")]["mean_mm"]) < 0.85 * mean_face


def test_micc_bad_root_is_a_usage_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fitter.cli.main", "micc", str(tmp_path), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no subject_XX folders" in p.stderr and "Traceback" not in p.stderr
