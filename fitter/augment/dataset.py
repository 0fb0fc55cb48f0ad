"""Writing augmented samples as a dataset, and building one from a folder of captures.

Layout of a dataset OUT:
- `OUT/<capture>/<capture>_<yaw>_<pitch>.jpg`: the sample (yaw, pitch: the requested head rotation in
  whole degrees, e.g. `fran_-45_20.jpg`);
- `….json`: its labels (fitter.augment.sample: K, R, t, scale, source_to_sample, yaw/pitch/roll, model name
  and checksum, identity and expression coefficients, the S_morph reference, landmarks_68 and
  landmarks_478 with visibility, face_box, invented_fraction);
- `….npz`: the same arrays (float64) and `invented`, the (H, W) bool mask of filled pixels;
- `….mat` with `--format 300wlp`: the 300W-LP fields `roi` (1×4: x0, y0, x1, y1 of the face box), `pt2d` (2×68,
  iBUG order, px) and `Pose_Para` (1×7: pitch, yaw, roll in radians, then t (mm) and scale);
- `OUT/<capture>/registration/`: what `facefit register` writes (registered.obj, s_morph.npz, report.json,
  capture.json, overlay.png) — the S_morph the labels refer to;
- `OUT/<capture>/samples.csv` (its samples) and `contact_sheet.png` (every sample, landmarks drawn, the
  filled pixels tinted);
- `OUT/index.csv`: every sample of every capture (rebuilt from the samples.csv files);
- `OUT/rejected.csv` (`dataset build`): the captures left out, with the quality figure that failed.
"""
import csv
import io
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import save_npz_atomic, write_bytes_atomic, write_image_atomic, write_json_atomic, write_text_atomic
from .sample import DEFAULT_PITCHES, DEFAULT_YAWS, prepare_source, synthesize

INDEX_FIELDS = ("sample", "capture", "image", "yaw_delta", "pitch_delta", "yaw", "pitch", "roll", "visible_68",
                "invented_fraction")
FORMATS = ("default", "300wlp")
JPEG_QUALITY = 95
SHEET_TILE = 192

# A capture enters the dataset only when its registration is good enough to give exact labels (report.json's
# figures). Measured on synthetic RGB-D captures, the Fran and MeshMonk scans, and a synthetic capture
# whose depth is 20 px off its colour (`facefit bench augment`, BENCHMARKS.md):
# - lift_residual_mm: the detected landmarks' fit to the depth under them — 1.1-2.7 mm good, 7.1 mm off;
# - drift_iod: how far T-ICP moved the landmarks in the image from the coarse fit to the detections — 0.9-2.1 %
#   of the interocular distance good, 2.9-3.6 % for depth 16-20 px off;
# - landmark_error_iod: the registration's landmarks against the detected ones — 1.1-2.7 % good;
# - inlier_fraction and median_residual_mm: T-ICP's fit to the depth — 0.40-0.76 and 0.47-0.71 mm good.
QUALITY_THRESHOLDS = {"lift_residual_mm": ("max", 4.0), "drift_iod": ("max", 0.03),
                      "landmark_error_iod": ("max", 0.05), "inlier_fraction": ("min", 0.30),
                      "median_residual_mm": ("max", 1.5)}


def quality_record(report):
    """The figures of a registration's report that decide whether it enters the dataset."""
    last = lambda v: v[-1] if isinstance(v, list) else v  # noqa: E731 - per-iteration lists: the final value
    return {k: last(report.get(k)) for k in QUALITY_THRESHOLDS}


def quality_failure(record):
    """A one-line reason the quality record fails QUALITY_THRESHOLDS, or None."""
    for k, (kind, bound) in QUALITY_THRESHOLDS.items():
        v = record.get(k)
        if v is None:
            return f"{k} missing from the registration's report"
        if (kind == "max" and v > bound) or (kind == "min" and v < bound):
            return f"{k} {v:.4g} {'>' if kind == 'max' else '<'} {bound}"
    return None


MAX_ANGLES = 361  # per axis: more is a typo (a 1e-9 step would ask for 10^11 samples), not a dataset


def parse_angles(text, name, limit):
    """Degrees from '0,15,-15' or a range 'a:b:step' (inclusive), each within ±limit, at most MAX_ANGLES."""
    try:
        if ":" in text:
            a, b, step = (float(x) for x in text.split(":"))
            if not step > 0 or not np.isfinite([a, b, step]).all():
                raise ValueError
            count = int(np.floor(abs(b - a) / step + 0.5)) + 1
            if count > MAX_ANGLES:
                raise InputError(f"{name}: {text!r} asks for {count:.3g} angles; at most {MAX_ANGLES} (a larger step)")
            vals = list(np.arange(a, b + step / 2, step) if b >= a else np.arange(a, b - step / 2, -step))
        else:
            vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{name}: give degrees as 'a,b,c' or 'start:stop:step' (step > 0), got {text!r}") from None
    if not vals or any(abs(v) > limit or not np.isfinite(v) for v in vals):
        raise InputError(f"{name}: give angles within ±{limit:g} degrees, got {text!r}")
    if len(vals) > MAX_ANGLES:
        raise InputError(f"{name}: {len(vals)} angles; at most {MAX_ANGLES}")
    return tuple(dict.fromkeys(float(round(v, 3)) for v in vals))


def sample_name(capture, yaw, pitch):
    fmt = lambda a: f"{a:g}"  # noqa: E731 - whole degrees without ".0"
    return f"{capture}_{fmt(yaw)}_{fmt(pitch)}"


def sample_labels(prepared, sample, capture, s_morph_ref):
    """The JSON labels of a Sample."""
    model = prepared.model
    r = lambda a, k=6: np.round(np.asarray(a, float), k).tolist()  # noqa: E731
    yaw, pitch, roll = sample.angles
    return {
        "image_size": [int(sample.image.shape[1]), int(sample.image.shape[0])],
        "K": r(sample.K), "R": r(sample.R, 9), "t": r(sample.t), "scale": round(sample.scale, 9),
        "source_to_sample": r(sample.source_to_sample, 9),
        "yaw_delta": sample.yaw_delta, "pitch_delta": sample.pitch_delta,
        "yaw": round(yaw, 4), "pitch": round(pitch, 4), "roll": round(roll, 4),
        "model": {"name": model.name, "sha256": model.metadata.get("model_sha256")},
        "identity": None if capture.identity is None else r(capture.identity),
        "expression": None if capture.expression is None else dict(zip(model.expression_names, r(capture.expression))),
        "s_morph": s_morph_ref,
        "landmarks_68": r(sample.landmarks_68, 3), "visible_68": sample.visible_68.astype(int).tolist(),
        "landmarks_478": r(sample.landmarks_478, 3), "visible_478": sample.visible_478.astype(int).tolist(),
        "face_box": [round(v, 1) for v in sample.face_box],
        "invented_fraction": round(float(sample.invented.mean()), 6),
        "capture": capture.name, "source_report": {k: capture.report.get(k) for k in ("landmark_error_iod",)},
    }


def write_sample(folder, name, sample, labels, fmt="default"):
    """IMAGE.jpg, IMAGE.json, IMAGE.npz (and IMAGE.mat for 300wlp) in `folder`, each atomically; the image
    last, so a sample with an image is complete."""
    import cv2

    folder = Path(folder)
    save_npz_atomic(folder / f"{name}.npz", compressed=True, invented=sample.invented, K=sample.K, R=sample.R,
                    t=sample.t, scale=np.float64(sample.scale), source_to_sample=sample.source_to_sample,
                    angles=np.asarray(sample.angles), landmarks_68=sample.landmarks_68, visible_68=sample.visible_68,
                    landmarks_478=sample.landmarks_478, visible_478=sample.visible_478,
                    landmarks_478_3d=sample.landmarks_478_3d, face_box=np.asarray(sample.face_box))
    write_json_atomic(folder / f"{name}.json", labels)
    if fmt == "300wlp":
        write_300wlp(folder / f"{name}.mat", sample)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise InputError(f"cannot encode {name}.jpg")
    write_bytes_atomic(folder / f"{name}.jpg", buf.tobytes())


def write_300wlp(path, sample):
    """The 300W-LP fields of a sample (see the module docstring) as a MATLAB 5 .mat file."""
    from scipy.io import savemat

    pitch, yaw, roll = np.radians([sample.angles[1], sample.angles[0], sample.angles[2]])
    buf = io.BytesIO()
    savemat(buf, {"roi": np.asarray(sample.face_box, float)[None],
                  "pt2d": np.asarray(sample.landmarks_68, float).T,
                  "Pose_Para": np.concatenate([[pitch, yaw, roll], sample.t, [sample.scale]])[None]})
    write_bytes_atomic(path, buf.getvalue())


def augment_capture(prepared, capture, folder, yaws=DEFAULT_YAWS, pitches=DEFAULT_PITCHES, fmt="default",
                    s_morph_ref=None):
    """Every (yaw, pitch) sample of a RegisteredCapture written into `folder`, with samples.csv and
    contact_sheet.png. Returns the index rows (dicts of INDEX_FIELDS)."""
    import time

    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source = prepare_source(prepared, capture)
    t_prepare = time.perf_counter() - t0
    rows, tiles = [], []
    t0 = time.perf_counter()
    for pitch in pitches:
        for yaw in yaws:
            s = synthesize(prepared, source, yaw, pitch)
            name = sample_name(capture.name, yaw, pitch)
            write_sample(folder, name, s, sample_labels(prepared, s, capture, s_morph_ref or capture.s_morph_ref), fmt)
            rows.append({"sample": name, "capture": capture.name, "image": f"{capture.name}/{name}.jpg",
                         "yaw_delta": yaw, "pitch_delta": pitch, "yaw": round(s.angles[0], 3),
                         "pitch": round(s.angles[1], 3), "roll": round(s.angles[2], 3),
                         "visible_68": int(s.visible_68.sum()),
                         "invented_fraction": round(float(s.invented.mean()), 5)})
            tiles.append(sheet_tile(s, f"{yaw:g}/{pitch:g}"))
    t_samples = time.perf_counter() - t0
    from ..geometry.draw import contact_sheet

    write_image_atomic(folder / "contact_sheet.png", contact_sheet(tiles, columns=len(yaws)))
    write_text_atomic(folder / "samples.csv", rows_to_csv(rows))
    return rows, {"prepare_s": round(t_prepare, 4), "samples_s": round(t_samples, 4), "samples": len(rows)}


def sheet_tile(sample, caption):
    """A SHEET_TILE² tile of a sample around its 68 landmarks: landmarks (green visible, red hidden), the
    filled pixels tinted blue, the pose written."""
    from ..geometry.camera import crop_image, square_box
    from ..geometry.draw import draw_points, draw_text

    img = sample.image.copy()
    tint = sample.invented
    img[tint] = (0.6 * img[tint] + np.array([0, 0, 0.4 * 255])).astype(np.uint8)
    img = draw_points(img, sample.landmarks_68[sample.visible_68], (0, 255, 0), 1.2)
    img = draw_points(img, sample.landmarks_68[~sample.visible_68], (255, 40, 40), 1.2)
    box = square_box(sample.landmarks_68, 0.3, whole_pixels=True)  # around the face, as the landmarks say
    tile, _ = crop_image(img, box, SHEET_TILE)
    return draw_text(tile, [caption], origin=(6, 16), scale=0.45)


def rows_to_csv(rows):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=INDEX_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def rebuild_index(outdir):
    """OUT/index.csv from every OUT/<capture>/samples.csv (sorted by capture). Returns the number of rows."""
    outdir = Path(outdir)
    rows = []
    for f in sorted(outdir.glob("*/samples.csv")):
        with open(f, newline="") as fh:
            rows.extend(csv.DictReader(fh))
    write_text_atomic(outdir / "index.csv", rows_to_csv(rows))
    return len(rows)


def augment_registrations(prepared_name, reg_dirs, outdir, yaws=DEFAULT_YAWS, pitches=DEFAULT_PITCHES, fmt="default",
                          workers=None, scheduler=None, progress=True, log=print):
    """`facefit augment`: the samples of each registration folder in `reg_dirs` (written by `facefit
    register`) under OUT/<capture>/ (capture: the folder's name) through the batch engine (resumable; a
    failed capture never stops the rest), then OUT/index.csv. Returns the BatchSummary (each done capture's
    result: samples, times_s). Raises InputError, before anything is written, for a folder that is not a
    registration's (fitter.registration.capture.read_registration) or two of one name."""
    from ..batch import WorkItem, run_batch
    from ..model.store import load_model
    from ..registration.capture import read_registration

    model = load_model(prepared_name)
    items, seen = [], {}
    for reg_dir in map(Path, reg_dirs):
        read_registration(model, reg_dir)  # a damaged folder is said now, before anything is written
        if reg_dir.name in seen:
            raise InputError(f"{seen[reg_dir.name]} and {reg_dir}: two registrations named {reg_dir.name!r} would "
                             f"write the same OUT/{reg_dir.name}/: rename one folder")
        seen[reg_dir.name] = reg_dir
        items.append(WorkItem(reg_dir.name, "fitter.augment.dataset:augment_task",
                              {"registration": str(reg_dir.resolve()), "yaws": list(yaws), "pitches": list(pitches),
                               "format": fmt}))
    summary = run_batch(items, outdir, prepared_name, workers=workers, scheduler=scheduler, progress=progress,
                        log=log, desc="registrations")
    rebuild_index(outdir)
    return summary


def augment_task(prepared, args, folder):
    """Batch task: the samples of one registration folder (args: registration, yaws, pitches, format)."""
    from ..registration.capture import load_registered_capture

    capture = load_registered_capture(prepared, args["registration"])
    rows, times = augment_capture(prepared, capture, Path(folder), args["yaws"], args["pitches"], args["format"])
    return {"samples": len(rows), "times_s": times}


# --- dataset build (fitter.batch) ----------------------------------------------------------------------
def find_captures(root, outdir=None):
    """(name, folder) of every capture folder under `root` (its subfolders, sorted; one level), leaving out
    `outdir` and any other batch's output folder (one holding a facefit manifest.json) placed there."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of captures")
    out_resolved = Path(outdir).resolve() if outdir is not None else None
    out = [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
           and p.resolve() != out_resolved and not (p / "manifest.json").is_file()]
    if not out:
        raise InputError(f"{root}: no capture folders (each: color.* + depth.* + intrinsics.json, or a scan file)")
    return out


def dataset_items(root, yaws, pitches, fmt, outdir=None):
    from ..batch import WorkItem

    return [WorkItem(name, "fitter.augment.dataset:build_task",
                     {"folder": str(folder.resolve()), "yaws": list(yaws), "pitches": list(pitches), "format": fmt})
            for name, folder in find_captures(root, outdir)]


def build_task(prepared, args, folder):
    """Batch task: register one capture folder, record its quality, and augment it when good enough."""
    from ..registration.capture import find_capture, register_capture
    from ..registration.register import registration_overlay, write_registration

    folder = Path(folder)
    name = Path(args["folder"]).name
    spec = find_capture(args["folder"])
    notes = []
    reg, capture, spec = register_capture(prepared, spec, notes=notes)
    capture.name = name
    overlay = registration_overlay(prepared, capture.vertices, capture.color, capture.K)
    reg_dir = folder / "registration"
    reg_dir.mkdir(parents=True, exist_ok=True)
    write_registration(reg, prepared.model, reg_dir, overlay, spec.to_dict())
    from ..model.store import sha256_file

    s_ref = f"registration/s_morph.npz sha256:{sha256_file(reg_dir / 's_morph.npz')}"
    quality = quality_record(reg.report)
    write_json_atomic(folder / "quality.json", quality)
    reason = quality_failure(quality)
    if reason:
        return {"capture": name, "kind": spec.kind, "rejected": reason, "quality": quality, "samples": 0,
                "notes": notes}
    rows, times = augment_capture(prepared, capture, folder, args["yaws"], args["pitches"], args["format"], s_ref)
    return {"capture": name, "kind": spec.kind, "rejected": None, "quality": quality, "samples": len(rows),
            "times_s": dict(times, registration_s=reg.report.get("times_s", {}).get("total_s")), "notes": notes}


def build_dataset(prepared_name, root, outdir, yaws=DEFAULT_YAWS, pitches=DEFAULT_PITCHES, fmt="default",
                  workers=None, scheduler=None, progress=True, log=print):
    """`facefit dataset build`: every capture under `root` registered and augmented through the batch
    engine into `outdir`; then OUT/index.csv (the accepted captures' samples) and OUT/rejected.csv.
    Returns (BatchSummary, accepted, rejected rows)."""
    from ..batch import read_done, run_batch

    items = dataset_items(root, yaws, pitches, fmt, outdir)
    summary = run_batch(items, outdir, prepared_name, workers=workers, scheduler=scheduler, progress=progress,
                        log=log, desc="captures")
    rejected, accepted = [], []
    for item in items:
        done = read_done(outdir, item.id)
        if not done:
            continue
        res = done.get("result", {})
        if res.get("rejected"):
            rejected.append({"capture": item.id, "reason": res["rejected"], **(res.get("quality") or {})})
        else:
            accepted.append(item.id)
    out = io.StringIO()
    fields = ["capture", "reason", *QUALITY_THRESHOLDS]
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rejected)
    write_text_atomic(Path(outdir) / "rejected.csv", out.getvalue())
    write_json_atomic(Path(outdir) / "thresholds.json",
                      {k: {"kind": a, "bound": b} for k, (a, b) in QUALITY_THRESHOLDS.items()})
    rebuild_index(outdir)
    return summary, accepted, rejected
