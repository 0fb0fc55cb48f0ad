"""Video and multi-photo reconstruction (fitter.video): frames, tracking, selection, the joint fit."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PHOTOS, need
from fitter.detection import landmarks as lmk
from fitter.errors import InputError
from fitter.geometry.camera import Camera
from fitter.video.frames import read_frames
from fitter.video.selection import (TRACK_LOST_FRAMES, YAW_BIN_EDGES, FrameRecord, Tracker, follow, select_frames,
                                    yaw_bin)


def _jpeg_stream(path, frames):
    import cv2

    path.write_bytes(b"".join(cv2.imencode(".jpg", f[..., ::-1])[1].tobytes() for f in frames))


def test_read_frames_mjpeg_stride_folder_and_corrupt(tmp_path):
    import cv2

    frames = [np.full((48, 64, 3), 10 * k, np.uint8) for k in range(9)]
    _jpeg_stream(tmp_path / "v.mjpg", frames)
    got = list(read_frames(tmp_path / "v.mjpg", stride=4))
    assert [f.index for f in got] == [0, 4, 8]
    assert got[1].image.shape == (48, 64, 3) and abs(int(got[1].image.mean()) - 40) <= 2
    assert got[2].time_s == pytest.approx(8 / 25.0)  # raw MJPEG has no rate: FFmpeg's 25 fps
    (tmp_path / "frames").mkdir()
    for k, f in enumerate(frames[:5]):
        cv2.imwrite(str(tmp_path / "frames" / f"{k:03d}.png"), f)
    assert [f.index for f in read_frames(tmp_path / "frames", stride=2)] == [0, 2, 4]
    (tmp_path / "bad.mjpg").write_bytes(b"\xff\xd8 garbage " * 100)
    with pytest.raises(InputError, match="no frame could be decoded|not a readable video"):
        list(read_frames(tmp_path / "bad.mjpg"))
    with pytest.raises(InputError, match="does not exist"):
        list(read_frames(tmp_path / "missing.avi"))


def _face(cx, cy, size):
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (478, 2)) * size + [cx, cy]
    return lmk.FaceLandmarks(pts, np.zeros(478), (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2),
                             (640, 480))


def test_follow_keeps_the_same_person_not_the_largest():
    big_far, small_near = _face(500, 240, 200), _face(120, 200, 80)
    assert follow([small_near, big_far], None) is big_far          # the track starts on the largest face
    assert follow([big_far, small_near], (90, 170, 170, 250)) is small_near  # then follows the nearest
    assert follow([big_far], (40, 160, 120, 240)) is None          # a face far away is somebody else
    assert follow([], (0, 0, 10, 10)) is None


def test_tracker_restarts_after_losing_the_person():
    t = Tracker()
    a = _face(150, 240, 120)
    assert t.update([a, _face(500, 240, 60)]) is a                    # the largest starts the track
    assert t.update([_face(160, 245, 120), _face(500, 240, 200)]).box[0] < 300  # the nearest, not the largest
    moved = _face(520, 240, 120)  # the person reappears on the other side
    for _ in range(TRACK_LOST_FRAMES - 1):
        assert t.update([moved]) is None                             # somebody else, for now
    assert t.update([moved]) is moved                                 # a lost track starts again
    assert t.update([]) is None and t.box == moved.box                # no face: the track waits


def test_selection_spreads_over_yaw_bins_and_skips_blur():
    rng = np.random.default_rng(3)
    records = []
    for k in range(120):
        r = FrameRecord(k, k / 25)
        r.face, r.image = _face(320, 240, 150), np.zeros((2, 2, 3), np.uint8)
        r.yaw_deg = float(60 * np.sin(k / 120 * 2 * np.pi) + rng.normal(0, 2))
        r.face_px = float(rng.uniform(90, 110))
        r.sharpness = float(rng.uniform(80, 120)) if k % 7 else 5.0  # every 7th frame blurred
        records.append(r)
    kept = select_frames(records, per_bin=2)
    bins_present = {yaw_bin(r.yaw_deg) for r in records if r.sharpness > 20}
    bins_kept = [yaw_bin(r.yaw_deg) for r in kept]
    assert set(bins_kept) == bins_present and len(bins_present) >= 7  # every yaw bin the head visited
    assert max(bins_kept.count(b) for b in set(bins_kept)) == 2           # at most per_bin per bin
    assert all(r.sharpness > 20 for r in kept)                               # no blurred frame kept
    assert all(r.status == "blurred" for r in records if r.sharpness == 5.0)
    for r in kept:  # the best of its bin
        rivals = [q for q in records if yaw_bin(q.yaw_deg) == yaw_bin(r.yaw_deg) and q.status == "not selected"]
        assert all(q.score <= r.score for q in rivals)
    assert len(YAW_BIN_EDGES) == 8


def _truth_vertices(prepared, truth, sid):
    model = prepared.model
    return model.shape(np.asarray(truth[sid]["identity"]), np.zeros(model.n_expression))


def _subject(truth, kind):
    return next(s for s, t in truth.items() if t["kind"] == kind)


def test_joint_fit_recovers_identity_better_than_any_single_frame(ict_prepared, mini_micc):
    from fitter.bench.common import face_error
    from fitter.photo.coarse import fit_landmarks
    from fitter.video import reconstruct_video

    root, truth = mini_micc
    sid = _subject(truth, "synthetic")
    V_true = _truth_vertices(ict_prepared, truth, sid)
    model = ict_prepared.model
    res = reconstruct_video(ict_prepared, root / sid / "Video" / "Indoor-Cooperative.mjpg")
    kept = res.kept_views
    assert len(kept) >= 5 and min(r.yaw_deg for r in kept) < -25 and max(r.yaw_deg for r in kept) > 25
    joint = face_error(model, res.neutral, V_true)
    singles = []
    for v in kept:
        fit = fit_landmarks(ict_prepared, [v.face.points], [Camera.for_image(*v.face.image_size)], free_focal=True)
        singles.append(face_error(model, model.shape(fit.identity, np.zeros(model.n_expression)), V_true))
    mean_face = face_error(model, model.mean, V_true)
    assert joint < min(singles), (joint, singles)
    assert joint < 0.75 * mean_face, (joint, mean_face)


def test_a_frame_of_another_person_is_dropped(ict_prepared, mini_micc):
    from fitter.video.frames import read_frames
    from fitter.video.joint import fit_views

    root, truth = mini_micc
    points, sizes = [], []
    for f in read_frames(root / _subject(truth, "synthetic") / "Video" / "Indoor-Cooperative.mjpg", stride=5):
        face = lmk.detect_landmarks(f.image)[0]
        points.append(face.points)
        sizes.append(face.image_size)
    other = next(read_frames(root / _subject(truth, "scan") / "Video" / "Indoor-Cooperative.mjpg"))
    points.insert(3, lmk.detect_landmarks(other.image)[0].points)  # Fran's frontal frame among them
    sizes.insert(3, (640, 480))
    joint = fit_views(ict_prepared, points, [Camera.for_image(*s) for s in sizes], free_focal=True)
    assert 3 in joint.dropped and "another person" in joint.dropped[3]
    assert len(joint.dropped) <= 2 and joint.rounds >= 2
    assert 3 not in joint.kept and len(joint.fit.images) == len(joint.kept)


def test_video_command_outputs(ict_prepared, mini_micc, tmp_path):
    root, truth = mini_micc
    sid = _subject(truth, "synthetic")
    video = root / sid / "Video" / "PTZ-Indoor.mjpg"
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "fitter.cli.main", "video", str(video), "-o", str(out), "--workers", "0",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    line = json.loads(p.stdout.strip().splitlines()[-1])
    d = out / "PTZ-Indoor"
    assert line["ok"] and Path(line["output"]) == d
    for name in ("identity.obj", "identity.mtl", "texture.png", "params.json", "frames.png", "DONE.json"):
        assert (d / name).is_file(), name
    params = json.loads((d / "params.json").read_text())
    model = ict_prepared.model
    from fitter.geometry.mesh import read_obj

    V = read_obj(d / "identity.obj").V
    assert V.shape == (model.n_vertices, 3)
    assert np.abs(V - model.shape(np.asarray(params["identity"]), np.zeros(model.n_expression))).max() < 1e-3
    fitted = [v for v in params["views"] if v["status"] == "kept"]
    assert len(fitted) == params["frames"]["fitted"] >= 4
    for v in fitted:  # a 120-pixel face turned up to 55°: a few % of the interocular distance
        assert np.asarray(v["K"]).shape == (3, 3) and len(v["t_mm"]) == 3 and v["landmark_error_iod"] < 0.1
        assert set(v["expression"]) == set(model.expression_names)
    assert np.median([v["landmark_error_iod"] for v in fitted]) < 0.04
    statuses = {r["status"] for r in params["scanned"]}
    assert statuses <= {"kept", "dropped", "not selected", "blurred", "too small", "no face", "other person"}
    assert params["frames"]["scanned"] == len(params["scanned"]) >= 10
    assert {"decode_s", "detect_s", "joint_fit_s", "refine_s", "outputs_s"} <= set(params["times_s"])
    # the painted face has too little texture for the model-space refinement: declined, with the reason
    ms = params["refinement"]["model_space"]
    assert ms["applied"] is False and "texture" in ms["reason"] and ms["tracks"] < 400, ms
    assert params["refinement"]["medium"].startswith("not run")
    import cv2

    sheet = cv2.imread(str(d / "frames.png"))
    assert sheet.shape[0] >= 256 and sheet.shape[1] >= 256 * min(len(fitted), 6)


def test_fit_same_person_joint(ict_prepared, tmp_path):
    photos = [need(PHOTOS / "whitehouse_obama.jpg", "photo"), need(PHOTOS / "whitehouse_obama2.jpg", "photo")]
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(b"not a jpeg")  # one photo's failure, as a photo without a face is: the others go on
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "fitter.cli.main", "fit", *map(str, photos), str(damaged),
                        "--same-person", "-o", str(out), "--json", "--mesh-format", "glb"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 4, p.stderr  # not every photo was fitted
    assert "damaged.jpg: unreadable" in p.stderr and "Traceback" not in p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    d = out / "whitehouse_obama_joint"
    assert summary["fitted"] == 2 and summary["photos"] == 3 and Path(summary["output"]) == d
    assert [x["status"] for x in summary["not_fitted"]] == ["unreadable"]
    params = json.loads((d / "params.json").read_text())
    assert [Path(v["source"]).name for v in params["views"]] == ["whitehouse_obama.jpg", "whitehouse_obama2.jpg"]
    assert all(v["landmark_error_iod"] < 0.05 for v in params["views"])
    assert (d / "identity.obj").is_file() and (d / "texture.png").is_file()
    # identity.glb: the same mesh in glTF's y-up frame, which is the model frame identity.obj is in
    import pygltflib

    from fitter.geometry.mesh import read_obj

    glb = pygltflib.GLTF2().load(str(d / "identity.glb"))
    acc = glb.accessors[glb.meshes[0].primitives[0].attributes.POSITION]
    V_obj = read_obj(d / "identity.obj").V
    assert np.allclose(acc.min, V_obj.min(0), atol=1e-3) and np.allclose(acc.max, V_obj.max(0), atol=1e-3)


def test_fit_same_person_same_expression(ict_prepared, tmp_path):
    photos = [need(PHOTOS / "whitehouse_obama.jpg", "photo"), need(PHOTOS / "whitehouse_obama2.jpg", "photo")]
    p = subprocess.run([sys.executable, "-m", "fitter.cli.main", "fit", str(photos[0]), "--same-expression",
                        "-o", str(tmp_path / "alone")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--same-person" in p.stderr and "Traceback" not in p.stderr
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "fitter.cli.main", "fit", *map(str, photos), "--same-person",
                        "--same-expression", "--no-refine", "-o", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    params = json.loads((out / "whitehouse_obama_joint" / "params.json").read_text())
    assert params["joint_fit"]["shared_expression"] is True
    first, second = (v["expression"] for v in params["views"])
    assert first == second and first == params["median_expression"] and max(first.values()) > 0.01


def test_dask_workers_give_the_same_reconstruction_as_one_process(ict_prepared, mini_micc, tmp_path):
    from fitter.batch import WorkItem, run_batch

    root, truth = mini_micc
    items = [WorkItem(f"{sid}", "fitter.video.reconstruct:video_task",
                      {"video": str(root / sid / "Video" / "PTZ-Outdoor.mjpg")})
             for sid in (_subject(truth, "synthetic"), _subject(truth, "scan"))]
    one = run_batch(items, tmp_path / "one", model_name="ict", workers=0, progress=False)
    two = run_batch(items, tmp_path / "two", model_name="ict", workers=2, progress=False)
    assert not one.failed and not two.failed and two.workers == 2
    for it in items:
        for name in ("identity.obj", "texture.png"):
            assert (tmp_path / "one" / it.id / name).read_bytes() == (tmp_path / "two" / it.id / name).read_bytes()
        a = json.loads((tmp_path / "one" / it.id / "params.json").read_text())
        b = json.loads((tmp_path / "two" / it.id / "params.json").read_text())
        assert a["identity"] == b["identity"] and a["views"] == b["views"]
