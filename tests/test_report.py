"""The batch report (fitter.report): `report.html` written by `facefit micc`, `facefit video` and `facefit dataset
build` and rebuilt by `facefit report`, opened in headless Chromium: no console error, no request off the
machine, every item in its table (the failed ones too), and a 3-D view that shows the mesh."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fitter.bench.browser import CHROMIUM, open_page

CLI = [sys.executable, "-m", "fitter.cli.main"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (make test installs "
                                                              "Debian's chromium)")


def _run(*args):
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900)
    return p


def _subject(truth, kind):
    return next(s for s, t in truth.items() if t["kind"] == kind)


def _offline(result):
    return [u for u in result["requests"] if not u.startswith(("file:", "blob:", "data:"))]


def _check_page(path, rows_selector, expected_rows):
    """At a desktop and a phone size: loaded, no console error, no request off the machine, and the table has
    expected_rows rows."""
    url = path.resolve().as_uri()
    for width, height, mobile in ((1280, 900, False), (390, 844, True)):
        r = open_page(url, width=width, height=height, mobile=mobile,
                      value=f"document.querySelectorAll({json.dumps(rows_selector)}).length")
        assert r["ready"], "the page did not finish loading"
        assert not r["errors"], r["errors"]
        assert not _offline(r), _offline(r)
        assert r["value"] == expected_rows


def _mesh_visible(shot, x, y, w, h):
    """The share of the viewer's pixels that differ from its background (its corner's colour)."""
    crop = shot[int(y) + 10:int(y + h) - 10, int(x) + 10:int(x + w) - 10].astype(float)  # inside its rounded corners
    background = crop[:8, :8].reshape(-1, 3).mean(0)
    return float((np.abs(crop - background).sum(-1) > 30).mean())


@needs_chromium
def test_micc_report(ict_model, mini_micc, tmp_path):
    import cv2

    root, truth = mini_micc
    synth, corrupt = _subject(truth, "synthetic"), _subject(truth, "corrupt video")
    out = tmp_path / "m"
    p = _run("micc", root, "-o", out, "--gt-landmarks", root / "gt_landmarks", "--subjects",
             f"{synth[-2:]},{corrupt[-2:]}", "--settings", "Indoor-Cooperative,PTZ-Outdoor", "--no-refine",
             "--workers", "0")
    assert p.returncode == 4, p.stderr  # the corrupt video
    page = out / "report.html"
    assert page.is_file() and f"report: {page}" in p.stderr
    results = list(csv.DictReader(open(out / "results.csv")))
    html = page.read_text()
    assert html.count('<tr id="row-') == len(results) == 4
    assert "no frame could be decoded" in html and "GANFit (S4 Table 1)" in html
    _check_page(page, "#videos tbody tr", len(results))
    key = f"{synth}_Indoor-Cooperative"
    url = f"{page.resolve().as_uri()}#view={key}"
    r = open_page(url, until=f"document.body.dataset.viewLoaded === {json.dumps(key)}")
    assert r["ready"] and not r["errors"] and not _offline(r)
    shot = cv2.imdecode(np.frombuffer(r["screenshot"], np.uint8), cv2.IMREAD_COLOR)
    cv2.imwrite(str(tmp_path / "micc_view.png"), shot)
    viewer = _find_viewer(shot)
    assert viewer is not None, "no 3-D view on the screen"
    assert _mesh_visible(shot, *viewer) > 0.15  # the face, not a blank canvas
    # a rerun after an item folder is lost: `facefit report` rebuilds the page, the item "to do"
    shutil.rmtree(out / synth / "PTZ-Outdoor")
    p = _run("report", out)
    assert p.returncode == 0, p.stderr
    assert "not run yet" in page.read_text()
    assert not (out / "report_files" / f"view_{synth}_PTZ-Outdoor.js").exists()  # what the page no longer uses


def _find_viewer(shot):
    """(x, y, w, h) of the 3-D viewer: the largest region of its background colour (#2b3040)."""
    import cv2

    mask = (np.abs(shot.astype(int) - np.array([64, 48, 43])).sum(-1) < 12).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = stats[k, :4]
    return (x, y, w, h) if w > 200 and h > 200 else None


@needs_chromium
def test_video_report(ict_model, mini_micc, tmp_path):
    import cv2

    root, truth = mini_micc
    video = root / _subject(truth, "scan") / "Video" / "PTZ-Indoor.mjpg"
    out = tmp_path / "v"
    p = _run("video", video, tmp_path / "missing.mjpg", "-o", out, "--no-refine", "--workers", "0")
    assert p.returncode == 4, p.stderr
    page = out / "report.html"
    html = page.read_text()
    assert "PTZ-Indoor" in html and "missing" in html and "does not exist" in html
    _check_page(page, "table.sortable tbody tr", 2)
    r = open_page(f"{page.resolve().as_uri()}#view=PTZ-Indoor",
                  until="document.body.dataset.viewLoaded === 'PTZ-Indoor'")
    assert r["ready"] and not r["errors"] and not _offline(r)
    shot = cv2.imdecode(np.frombuffer(r["screenshot"], np.uint8), cv2.IMREAD_COLOR)
    viewer = _find_viewer(shot)
    assert viewer is not None and _mesh_visible(shot, *viewer) > 0.15


@needs_chromium
def test_dataset_report(ict_prepared, tmp_path):
    from fitter.bench.augment import write_rgbd_capture
    from fitter.bench.synthetic import synthetic_rgbd

    root = tmp_path / "captures"
    write_rgbd_capture(root / "syn_a", synthetic_rgbd(ict_prepared, np.random.default_rng(1), occluders=False), 0)
    (root / "broken").mkdir()
    (root / "broken" / "color.png").write_bytes(b"not a png")
    np.save(root / "broken" / "depth.npy", np.zeros((4, 4)))
    (root / "broken" / "intrinsics.json").write_text("{}")
    out = tmp_path / "ds"
    p = _run("dataset", "build", root, "-o", out, "--yaws=-30,0,30", "--pitches", "0,10", "--workers", "0")
    assert p.returncode == 4, p.stderr
    page = out / "report.html"
    html = page.read_text()
    assert "accepted" in html and "broken" in html and "not a readable image" in html
    assert html.count("syn_a_") >= 6  # the yaw x pitch grid of thumbnails
    _check_page(page, "table.sortable tbody tr", 2)


def test_report_of_a_folder_that_is_no_batch_is_one_line(tmp_path):
    p = _run("report", tmp_path)
    assert p.returncode == 2 and "no manifest.json of a facefit batch" in p.stderr and "Traceback" not in p.stderr
    p = _run("report", tmp_path / "nothere")
    assert p.returncode == 2 and "no such folder" in p.stderr
