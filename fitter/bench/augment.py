"""`facefit bench augment`: out-of-plane augmentation (S1 §3.2) measured — label accuracy against synthetic
truth by yaw, realism against direct renders of the shared scans, MediaPipe on the samples against their
labels, speed per core at 512², and `dataset build` on 1 and 2 workers.

Label error: the median 2D distance of a sample's 68 landmarks to the true face's (the synthetic capture's
own mesh moved by the sample's source_to_sample, through the same embedding), in % of the interocular
distance as seen frontally at the face's depth (f · outer IOD / z; it does not shrink with yaw).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..detection.landmarks import outer_interocular, to_68
from ..geometry.camera import Camera

YAWS = tuple(range(-90, 91, 15))


def _iod_px(L68_3d, camera):
    return camera.focal * outer_interocular(L68_3d) / L68_3d[[36, 45], 2].mean()


def _by_abs_yaw(values):
    """{|yaw|: median} of {yaw: [values]}."""
    out = {}
    for yaw, v in values.items():
        out.setdefault(abs(yaw), []).extend(v)
    return {str(k): round(float(np.median(v)), 5) for k, v in sorted(out.items())}


def labels(prepared, n_captures=4, seed=0, log=print):
    """Label accuracy and MediaPipe NME by yaw on synthetic RGB-D captures (sensor noise, holes, flying pixels)."""
    from ..augment.sample import prepare_source, synthesize
    from ..detection.landmarks import detect_landmarks
    from ..registration.capture import RegisteredCapture
    from ..registration.register import register_rgbd
    from .synthetic import synthetic_rgbd

    emb, m = prepared.embedding, prepared.model
    errors, nme, missed = {}, {}, {}
    for k in range(n_captures):
        cap = synthetic_rgbd(prepared, np.random.default_rng(seed + 100 + k), occluders=False)
        reg = register_rgbd(prepared, cap["color"], cap["depth"], cap["K"])
        capture = RegisteredCapture.of(prepared, f"syn{k}", cap["color"], cap["depth"], cap["K"], reg)
        src = prepare_source(prepared, capture)
        for yaw in YAWS:
            s = synthesize(prepared, src, yaw, 0)
            T = s.source_to_sample
            truth = to_68(emb.points(cap["V"] @ T[:3, :3].T + T[:3, 3], m.faces, yaw_deg=s.angles[0]))
            cam = Camera(s.K)
            iod = _iod_px(truth, cam)
            uv = cam.pixels(truth)
            errors.setdefault(yaw, []).append(float(np.median(np.linalg.norm(s.landmarks_68 - uv, axis=1)) / iod))
            try:
                det = to_68(detect_landmarks(s.image)[0].points)
                nme.setdefault(yaw, []).append(float(np.mean(np.linalg.norm(det - s.landmarks_68, axis=1)) / iod))
            except Exception:  # noqa: BLE001 - no face found: counted
                missed[yaw] = missed.get(yaw, 0) + 1
        log(f"labels: capture {k + 1}/{n_captures} done")
    return {"captures": n_captures, "label_error_iod_median_by_abs_yaw": _by_abs_yaw(errors),
            "label_error_iod_max_by_abs_yaw": {
                str(a): round(float(max(max(errors[y]) for y in (a, -a) if y in errors)), 5)
                for a in sorted({abs(y) for y in YAWS})},
            "mediapipe_nme_iod_by_abs_yaw": _by_abs_yaw(nme),
            "mediapipe_missed_by_yaw": {str(k): v for k, v in sorted(missed.items())}}


def realism(prepared, scan_dir, yaws=(15, 30, 45, 60), log=print):
    """Each shared scan registered through its virtual frontal view, augmented, and compared with a direct
    render of the scan turned the same way: mean absolute error (/255) inside the face, on seen and on filled
    pixels, by yaw (both signs pooled)."""
    from ..augment.sample import prepare_source, synthesize
    from ..geometry.camera import Camera
    from ..registration.capture import CaptureSpec, register_capture
    from ..registration.scan import SCAN_LIGHT, render_scan
    from .common import shared_scans

    out = {}
    for name, spec_args in shared_scans(scan_dir):
        spec = CaptureSpec.of_scan(**spec_args)
        _, capture, spec = register_capture(prepared, spec)
        scan, cam = spec.read_scan(), spec.scan_camera()
        src = prepare_source(prepared, capture)
        rows = {}
        for yaw in yaws:
            for sgn in (1, -1):
                s = synthesize(prepared, src, sgn * yaw, 0)
                T = s.source_to_sample
                turned = Camera(cam.K, T[:3, :3] @ cam.R, T[:3, :3] @ cam.t + T[:3, 3], cam.width, cam.height)
                r = rows.setdefault(yaw, {"seen": [], "filled": [], "seen_light_fixed": [], "filled_light_fixed": [],
                                          "filled_fraction": []})
                # the light turned with the head (what the augmentation can reproduce), then fixed to the camera
                for suffix, light in (("", T[:3, :3] @ np.asarray(SCAN_LIGHT)), ("_light_fixed", SCAN_LIGHT)):
                    direct = render_scan(scan, turned, light_dir=tuple(light))
                    x0, y0, x1, y1 = (int(v) for v in s.face_box)
                    face = np.zeros(direct.mask.shape, bool)
                    face[y0:y1, x0:x1] = True
                    face &= direct.mask
                    err = np.abs(s.image.astype(float) - direct.color_uint8().astype(float)).mean(2)
                    r["seen" + suffix].append(float(err[face & ~s.invented].mean()))
                    if (face & s.invented).any():
                        r["filled" + suffix].append(float(err[face & s.invented].mean()))
                r["filled_fraction"].append(float((face & s.invented).sum() / max(face.sum(), 1)))
        out[name] = {str(y): {k: round(float(np.mean(v)), 3) if v else None for k, v in r.items()}
                     for y, r in rows.items()}
        log(f"realism: {name} done")
    return out


SPEED_SCRIPT = r"""
import json, sys, tempfile, time
import numpy as np
from fitter.batch import pin_to_one_core
pin_to_one_core()
from fitter.augment.dataset import augment_capture
from fitter.augment.sample import prepare_source, synthesize, DEFAULT_PITCHES, DEFAULT_YAWS
from fitter.bench.synthetic import synthetic_rgbd
from fitter.prepared import PreparedModel
from fitter.registration.capture import RegisteredCapture
from fitter.registration.register import register_rgbd
p = PreparedModel.load(sys.argv[1])
cap = synthetic_rgbd(p, np.random.default_rng(7), width=512, height=512, focal_px=560.0, occluders=False)
t = time.perf_counter(); reg = register_rgbd(p, cap["color"], cap["depth"], cap["K"]); t_reg = time.perf_counter() - t
rc = RegisteredCapture.of(p, "speed", cap["color"], cap["depth"], cap["K"], reg)
synthesize(p, prepare_source(p, rc), 30, 0)  # warm: renderer, tables
t = time.perf_counter(); src = prepare_source(p, rc); t_prep = time.perf_counter() - t
n = 0; t = time.perf_counter()
for pitch in DEFAULT_PITCHES:
    for yaw in DEFAULT_YAWS:
        synthesize(p, src, yaw, pitch); n += 1
t_syn = time.perf_counter() - t
with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter(); rows, times = augment_capture(p, rc, d); t_all = time.perf_counter() - t
print(json.dumps({"image": "512x512", "samples": n, "registration_s": round(t_reg, 3), "prepare_s": round(t_prep, 3),
                  "synthesis_samples_per_s": round(n / t_syn, 2),
                  "written_samples_per_s": round(len(rows) / t_all, 2), "written_incl_prepare_s": round(t_all, 3)}))
"""


def speed(model_name):
    """Samples per second on one core (a child process with every thread pool at one thread) at 512²."""
    from ..batch import SINGLE_THREAD_ENV

    env = dict(os.environ, **SINGLE_THREAD_ENV)
    p = subprocess.run([sys.executable, "-c", SPEED_SCRIPT, model_name], capture_output=True, text=True, env=env,
                       timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "speed run failed")
    return json.loads(p.stdout.strip().splitlines()[-1])


PHOTO_CAPTURE = "photos/whitehouse_obama.jpg"


def photo_capture(prepared, photo, folder):
    """An RGB-D capture of a real photo: its colour, and as depth the photo's own fit (coarse + medium)
    rendered through the fitted camera (the head only: no depth elsewhere). The real photo's hair, skin and
    background, with a depth known to be a face — how the augmentation looks on a real image."""
    from ..geometry.render import get_renderer
    from ..io import write_image_atomic
    from ..photo.pipeline import fit_photo

    res = fit_photo(photo, prepared, stages=("coarse", "medium"))[0]
    cam = res.fit.camera
    depth = get_renderer().render(res.vertices, prepared.render_faces, cam).depth
    folder = Path(folder)
    folder.mkdir(parents=True)
    write_image_atomic(folder / "color.png", res.working.image)
    np.save(folder / "depth.npy", depth.astype(np.float32))
    (folder / "intrinsics.json").write_text(json.dumps({"K": cam.K.tolist()}))
    return folder


def write_rgbd_capture(folder, cap, depth_shift_px=0):
    """A capture folder as `dataset build` reads it (color.png, depth.npy in mm, intrinsics.json) of a
    synthetic capture (fitter.bench.synthetic.synthetic_rgbd); depth_shift_px: the depth moved sideways off the
    colour by that many pixels (a misregistered sensor)."""
    from ..io import write_image_atomic

    folder = Path(folder)
    folder.mkdir(parents=True)
    write_image_atomic(folder / "color.png", cap["color"])
    np.save(folder / "depth.npy", np.roll(cap["depth"], depth_shift_px, axis=1))
    (folder / "intrinsics.json").write_text(json.dumps(Camera(cap["K"]).intrinsics_dict()))


def build_captures_root(prepared, root, scan_dir, n_synthetic=4):
    """The benchmark's captures: n synthetic RGB-D pairs, a real photo's capture (`photo_capture`), the shared
    scans (as links), one broken capture and one whose depth is 20 px off its colour."""
    from .common import shared_scans
    from .synthetic import synthetic_rgbd

    root = Path(root)

    def rgbd(name, seed, shift=0, **kw):
        cap = synthetic_rgbd(prepared, np.random.default_rng(seed), occluders=False, **kw)
        write_rgbd_capture(root / name, cap, shift)

    for k in range(n_synthetic):
        rgbd(f"synthetic_{k}", 200 + k, yaw=(-20.0, 0.0, 15.0, 25.0)[k % 4])
    rgbd("misaligned_depth", 300, shift=20)
    (root / "broken").mkdir()
    (root / "broken" / "color.png").write_bytes(b"not an image")
    (root / "broken" / "depth.npy").write_bytes(b"")
    (root / "broken" / "intrinsics.json").write_text("{}")
    if (Path(scan_dir) / PHOTO_CAPTURE).is_file():
        photo_capture(prepared, Path(scan_dir) / PHOTO_CAPTURE, root / "photo_obama")
    for name, spec in shared_scans(scan_dir):
        d = root / name
        d.mkdir()
        (d / Path(spec["scan"]).name).symlink_to(Path(spec["scan"]).resolve())
        if spec.get("texture"):
            (d / ("texture" + Path(spec["texture"]).suffix)).symlink_to(Path(spec["texture"]).resolve())
    return root


def build(model_name, scan_dir, workers=(1, 2), yaws="-60:60:30", pitches="0", log=print):
    """`facefit dataset build` wall time on the benchmark's captures with 1 and 2 local workers."""
    from ..prepared import PreparedModel

    prepared = PreparedModel.load(model_name)
    tmp = Path(tempfile.mkdtemp(prefix="facefit_bench_dataset_"))
    try:
        root = build_captures_root(prepared, tmp / "captures", scan_dir)
        out = {}
        for w in workers:
            dest = tmp / f"out{w}"
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "fitter.cli.main", "dataset", "build", str(root), "-o", str(dest),
                                "--yaws", yaws, "--pitches", pitches, "--workers", str(w), "--json"],
                               capture_output=True, text=True, timeout=3600)
            wall = time.perf_counter() - t
            res = json.loads(p.stdout.strip().splitlines()[-1])
            out[f"workers_{w}"] = {"wall_s": round(wall, 2), "exit": p.returncode, "samples": res["samples"],
                                   "accepted": res["accepted"], "rejected": res["rejected"],
                                   "failed": sorted(res["failed"])}
            rej = (dest / "rejected.csv").read_text().strip().splitlines()
            out[f"workers_{w}"]["rejected_csv"] = rej[1:]
            log(f"build: {w} worker(s) {wall:.1f} s")
        out["speedup_2_over_1"] = round(out["workers_1"]["wall_s"] / out["workers_2"]["wall_s"], 2)
        out["captures"] = sorted(p.name for p in root.iterdir())
        out["angles"] = {"yaws": yaws, "pitches": pitches}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def augment_bench(model_name, scan_dir, part="all", log=print):
    from ..prepared import PreparedModel

    prepared = PreparedModel.load(model_name)
    res = {}
    if part in ("all", "labels"):
        res["labels"] = labels(prepared, log=log)
    if part in ("all", "realism") and scan_dir:
        res["realism"] = realism(prepared, scan_dir, log=log)
    if part in ("all", "speed"):
        res["speed"] = speed(model_name)
        log("speed done")
    if part in ("all", "build") and scan_dir:
        res["build"] = build(model_name, scan_dir, log=log)
    return res
