"""One page a person looks at: `OUT/report.html` for a batch folder of `facefit micc`, `facefit video` or
`facefit dataset build`, made only from the files the batch wrote there (manifest.json, status.json, each
item's DONE.json, params.json, results.csv, summary.json, the images), so it can be rebuilt from any finished
or half-finished folder (`facefit report OUT`).

Layout: `OUT/report.html` and `OUT/report_files/` — thumbnails (JPEG, at most THUMB_PX wide), the vendored
3-D viewer (fitter/report_assets: Google's <model-viewer>, see VENDORED.md) and one small script per 3-D view
holding its GLB (base64; a script, not a fetch, so that the page works from file:// with no server). Nothing
is requested from the network when the page is opened; the 3-D views load when opened (a click, or
`report.html#view=KEY`).

3-D views: a video's identity mesh with its texture (from identity.obj + texture.png); a MICC video's scored
shape (video_shape.obj) coloured by its distance to the scan (distance.npz, the colours of distance.png).
"""
import base64
import csv
import json
import shutil
from pathlib import Path

import numpy as np

from .errors import InputError

REPORT = "report.html"
FILES = "report_files"
THUMB_PX = 480            # thumbnails' largest side (contact sheets: SHEET_PX)
SHEET_PX = 1200
SAMPLE_PX = 128           # a dataset sample's thumbnail in the yaw x pitch grid
ASSETS = Path(__file__).resolve().parent / "report_assets"
VIEWER_JS = "model-viewer-umd.min.js"
KINDS = {"fitter.datasets.micc:reconstruct_and_score": "micc", "fitter.video.reconstruct:video_task": "video",
         "fitter.augment.dataset:build_task": "dataset", "fitter.augment.dataset:augment_task": "augment"}


def batch_kind(outdir):
    """'micc', 'video', 'dataset' or 'augment' of a batch folder (its manifest's task). Raises InputError."""
    items = _manifest_items(outdir)
    kinds = {KINDS.get(d.get("task")) for d in items}
    if len(kinds) != 1 or None in kinds:
        raise InputError(f"{outdir}: not the output folder of facefit micc, video, dataset build or augment "
                         f"(its manifest.json names no such task)")
    return kinds.pop()


def write_report(outdir):
    """Write OUT/report.html and OUT/report_files/ for the batch folder `outdir`; returns the page's path.
    Raises InputError for a folder that is not a batch's."""
    from .io import write_text_atomic

    outdir = Path(outdir)
    kind = batch_kind(outdir)
    files = _Files(outdir)
    status = _read_json(outdir / "status.json") or {}
    items = _manifest_items(outdir)
    context = {"micc": _micc, "video": _video, "dataset": _dataset, "augment": _augment}[kind](outdir, items, status,
                                                                                             files)
    page = _template().render(kind="dataset" if kind == "augment" else kind, outdir=str(outdir.resolve()), files=FILES, viewer=f"{FILES}/{VIEWER_JS}",
                              **context)
    files.finish()
    write_text_atomic(outdir / REPORT, page)
    return outdir / REPORT


# --- what each kind shows --------------------------------------------------------------------------------
def _item_status(outdir, item_id, status):
    """(state, reason): done (a done-marker), failed (status.json's reason) or to do."""
    if (outdir / item_id / "DONE.json").is_file():
        return "done", ""
    st = status.get(item_id) or {}
    if st.get("status") == "failed":
        return "failed", st.get("reason", "")
    return "to do", "not run yet (the batch was stopped or is running)"


def _base_row(outdir, item, status, source_arg):
    """(the item's folder, its row: key, id, source (args[source_arg]), state, reason)."""
    state, reason = _item_status(outdir, item["id"], status)
    return outdir / item["id"], {"key": _key(item["id"]), "id": item["id"], "source": item["args"].get(source_arg, ""),
                                 "state": state, "reason": reason}


def _refinement(params):
    ref = (params or {}).get("refinement") or {}
    ms = ref.get("model_space") or {}
    if not isinstance(ms, dict):  # "not run (--no-refine)"
        ms = {"applied": False, "reason": str(ms)}
    med = ref.get("medium")
    medium = None if params is None else med.get("applied") if isinstance(med, dict) else False
    tracks = ms.get("tracks")
    if tracks is None and ms.get("rounds"):
        tracks = ms["rounds"][0].get("tracks")
    return {"tracks": tracks, "refined": ms.get("applied"), "medium": medium,
            "refine_reason": ms.get("reason", ""), "medium_reason": med.get("reason", "") if isinstance(med, dict)
            else (med or "")}


def _micc(outdir, items, status, files):
    from .datasets.micc import PUBLISHED, distance_colors
    from .geometry.camera import MODEL_TO_OPENCV
    from .geometry.mesh import read_obj
    from .photo.export import vertex_colored_glb

    summary = _read_json(outdir / "summary.json") or {}
    settings = summary.get("settings") or sorted({d["args"].get("setting") for d in items})
    rows = []
    by_id = {d["id"]: d for d in items}
    results = _read_csv(outdir / "results.csv")
    listed = {f"{r['subject']}/{r['setting']}" for r in results}
    for d in items:  # items the report does not list yet (a half-finished batch)
        if d["id"] not in listed:
            results.append({"subject": d["args"]["subject"], "setting": d["args"]["setting"], "status": "",
                            "reason": ""})
    for r in results:
        item_id = f"{r['subject']}/{r['setting']}"
        folder = outdir / item_id
        state, reason = (_item_status(outdir, item_id, status) if item_id in by_id
                         else (r.get("status") or "missing", r.get("reason", "")))
        if state != "done" and r.get("status") == "failed":
            reason = r.get("reason") or reason
        params = _read_json(folder / "params.json") if state == "done" else None
        row = {"key": _key(item_id), "id": item_id, "subject": r["subject"], "setting": r["setting"],
               "state": state, "reason": reason, **_refinement(params)}
        for k in ("symmetric_mean_mm", "mean_mm", "rmse_mm", "frames_kept", "frames_scanned", "seconds"):
            row[k] = _number(r.get(k))
        if state == "done":
            row["sheet"] = files.thumb(folder / "frames.png", f"{row['key']}_frames.jpg", SHEET_PX)
            row["distance"] = files.thumb(folder / "distance.png", f"{row['key']}_distance.jpg")
            mesh = folder / "video_shape.obj"
            if mesh.is_file():
                def glb(mesh=mesh, folder=folder):
                    m = read_obj(mesh)
                    dist = _distances(folder / "distance.npz", len(m.V))
                    F = m.F[np.isfinite(dist[m.F]).all(1)] if np.isfinite(dist).any() else m.F
                    rgb = (255 * distance_colors(dist)).astype(np.uint8)
                    return vertex_colored_glb(m.V @ MODEL_TO_OPENCV.T, F, rgb)
                row["view"] = files.glb_script(row["key"], mesh, glb)
        rows.append(row)
    per = summary.get("per_setting", {}).get("symmetric_mean_mm", {})
    ours = [{"name": "facefit, symmetric mean", "protocol": "symmetric",
             "cells": [_fmt_stat(per.get(s)) for s in settings]}]
    for key, name, protocol in (("mean_mm", "facefit, scan→recon mean", "one-way mean"),
                                ("rmse_mm", "facefit, scan→recon RMSE", "rmse")):
        st = summary.get("per_setting", {}).get(key, {})
        ours.append({"name": name, "protocol": protocol, "cells": [_fmt_stat(st.get(s)) for s in settings]})
    published = [{"name": n, "protocol": p, "cells": [f"{v[s][0]:.2f} ± {v[s][1]:.2f}" if s in v else "–"
                                                       for s in settings]} for n, p, v in PUBLISHED]
    counts = {k: sum(r["state"] == k for r in rows) for k in ("done", "failed", "missing", "to do")}
    return {"title": "MICC Florence evaluation", "settings": settings, "ours": ours, "published": published,
            "protocol": summary.get("protocol", ""), "boxplot": files.thumb(outdir / "boxplot.png", "boxplot.jpg", 800),
            "rows": rows, "counts": counts}


def _video(outdir, items, status, files):
    from .geometry.camera import MODEL_TO_OPENCV
    from .geometry.mesh import read_obj
    from .io import read_image
    from .photo.export import textured_glb, vertex_colored_glb

    rows = []
    for d in items:
        folder, row = _base_row(outdir, d, status, "video")
        if row["state"] == "done":
            params = _read_json(folder / "params.json") or {}
            frames = params.get("frames") or {}
            views = [v for v in params.get("views", []) if v.get("status") == "kept"]
            errors = [v["landmark_error_iod"] for v in views if v.get("landmark_error_iod") is not None]
            row.update(_refinement(params), scanned=frames.get("scanned"), fitted=frames.get("fitted"),
                       dropped=frames.get("dropped"),
                       landmark_error=round(100 * float(np.median(errors)), 2) if errors else None,
                       by_status=frames.get("by_status", {}),
                       seconds=round(sum((params.get("times_s") or {}).values()), 1))
            row["sheet"] = files.thumb(folder / "frames.png", f"{row['key']}_frames.jpg", SHEET_PX)
            row["texture"] = files.thumb(folder / "texture.png", f"{row['key']}_texture.jpg", 256)
            mesh = folder / "identity.obj"
            if mesh.is_file():
                def glb(mesh=mesh, folder=folder):
                    m = read_obj(mesh)
                    if m.UV is None:  # written without a texture: grey
                        return vertex_colored_glb(m.V @ MODEL_TO_OPENCV.T, m.F, np.full((len(m.V), 3), 190))
                    tex = read_image(folder / "texture.png") if (folder / "texture.png").is_file() else None
                    return textured_glb(m.V @ MODEL_TO_OPENCV.T, m.F, m.UV, m.F_uv, tex)
                row["view"] = files.glb_script(row["key"], mesh, glb)
        rows.append(row)
    counts = {k: sum(r["state"] == k for r in rows) for k in ("done", "failed", "to do")}
    return {"title": "Video reconstruction", "rows": rows, "counts": counts}


def _augment(outdir, items, status, files):
    """`facefit augment`'s batch: the dataset view without the quality gate (every done capture augmented)."""
    context = _dataset(outdir, items, status, files, source_arg="registration", gated=False)
    counts = {k: sum(r["state"] == k for r in context["rows"]) for k in ("done", "failed", "to do")}
    return dict(context, title="Augmentation", counts=counts)


def _dataset(outdir, items, status, files, source_arg="folder", gated=True):
    thresholds = _read_json(outdir / "thresholds.json") or {}
    rows = []
    for d in items:
        folder, row = _base_row(outdir, d, status, source_arg)
        row.update(quality=[], grid=None)
        if row["state"] == "done":
            result = (_read_json(folder / "DONE.json") or {}).get("result", {})
            if result.get("rejected"):
                row["state"], row["reason"] = "rejected", result["rejected"]
            elif gated:
                row["state"] = "accepted"
            quality = _read_json(folder / "quality.json") or result.get("quality") or {}
            for k, t in thresholds.items():
                v = quality.get(k)
                ok = v is not None and (v <= t["bound"] if t["kind"] == "max" else v >= t["bound"])
                row["quality"].append({"name": k, "value": v, "bound": f"{'≤' if t['kind'] == 'max' else '≥'} "
                                       f"{t['bound']:g}", "ok": ok})
            row["samples"] = result.get("samples", 0)
            row["sheet"] = files.thumb(folder / "contact_sheet.png", f"{row['key']}_sheet.jpg", SHEET_PX)
            row["overlay"] = files.thumb(folder / "registration" / "overlay.png", f"{row['key']}_overlay.jpg", 320)
            samples = _read_csv(folder / "samples.csv")
            if samples:
                yaws = sorted({float(s["yaw_delta"]) for s in samples})
                pitches = sorted({float(s["pitch_delta"]) for s in samples}, reverse=True)
                cell = {(float(s["yaw_delta"]), float(s["pitch_delta"])): s for s in samples}
                grid = []
                for p in pitches:
                    line = []
                    for y in yaws:
                        s = cell.get((y, p))
                        labels = None if s is None else _read_json((outdir / s["image"]).with_suffix(".json"))
                        line.append(None if s is None else {
                            "src": files.thumb(outdir / s["image"], f"{row['key']}_{_key(s['sample'])}.jpg",
                                               SAMPLE_PX, box=(labels or {}).get("face_box")),
                            "title": f"{s['sample']}: yaw {s['yaw']}, pitch {s['pitch']}, "
                                     f"{s['visible_68']} of 68 landmarks visible, "
                                     f"{100 * float(s['invented_fraction']):.1f} % filled"})
                    grid.append({"pitch": f"{p:g}", "cells": line})
                row["grid"] = {"yaws": [f"{y:g}" for y in yaws], "rows": grid}
        rows.append(row)
    counts = {k: sum(r["state"] == k for r in rows) for k in ("accepted", "rejected", "failed", "to do")}
    return {"title": "Dataset build", "rows": rows, "counts": counts, "thresholds": thresholds}


# --- files of the report -------------------------------------------------------------------------------
class _Files:
    """report_files/ of a report: thumbnails and 3-D views made anew only when their source changed; what
    this report does not use is removed at the end."""

    def __init__(self, outdir):
        self.root = Path(outdir) / FILES
        self.root.mkdir(parents=True, exist_ok=True)
        self.used = set()
        viewer = self.root / VIEWER_JS
        if not viewer.is_file() or viewer.stat().st_size != (ASSETS / VIEWER_JS).stat().st_size:
            shutil.copyfile(ASSETS / VIEWER_JS, viewer)
        shutil.copyfile(ASSETS / "model-viewer.LICENSE", self.root / "model-viewer.LICENSE")
        self.used |= {VIEWER_JS, "model-viewer.LICENSE"}

    def _fresh(self, target, source):
        return target.is_file() and target.stat().st_mtime >= source.stat().st_mtime

    def thumb(self, source, name, size=THUMB_PX, box=None):
        """The relative path of a JPEG thumbnail of image `source` (its largest side at most `size`; box: only
        the square around this (x0, y0, x1, y1) px, widened by half), or None when there is no such image."""
        import cv2

        from .io import write_bytes_atomic

        source = Path(source)
        if not source.is_file():
            return None
        target = self.root / name
        self.used.add(name)
        if not self._fresh(target, source):
            img = cv2.imread(str(source), cv2.IMREAD_COLOR)
            if img is None:
                return None
            if box is not None and len(box) == 4:
                cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 0.75 * max(box[2] - box[0], box[3] - box[1])
                x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
                crop = img[y0:int(cy + half) + 1, x0:int(cx + half) + 1]
                img = crop if crop.size else img
            k = size / max(img.shape[:2])
            if k < 1:
                img = cv2.resize(img, (max(1, round(img.shape[1] * k)), max(1, round(img.shape[0] * k))),
                                 interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
            if not ok:
                return None
            write_bytes_atomic(target, buf.tobytes())
        return f"{FILES}/{name}"

    def glb_script(self, key, source, make_glb):
        """The relative path of a script that puts the GLB made by make_glb() (bytes) into
        window.FACEFIT_GLB[key] (a script loads from file://, a fetch would not)."""
        from .io import write_text_atomic

        name = f"view_{key}.js"
        target = self.root / name
        self.used.add(name)
        if not self._fresh(target, Path(source)):
            data = base64.b64encode(make_glb()).decode("ascii")
            write_text_atomic(target, f"window.FACEFIT_GLB=window.FACEFIT_GLB||{{}};"
                                      f"window.FACEFIT_GLB[{json.dumps(key)}]=\"{data}\";\n")
        return f"{FILES}/{name}"

    def finish(self):
        for p in self.root.iterdir():
            if p.name not in self.used and p.is_file():
                p.unlink()


# --- small readers ---------------------------------------------------------------------------------------
def _manifest_items(outdir):
    doc = _read_json(Path(outdir) / "manifest.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        if not Path(outdir).is_dir():
            raise InputError(f"{outdir}: no such folder")
        raise InputError(f"{outdir}: no manifest.json of a facefit batch (give the -o folder of facefit micc, "
                         f"video or dataset build)")
    return [d for d in doc["items"] if isinstance(d, dict) and "id" in d and isinstance(d.get("args"), dict)]


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _read_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _distances(path, n):
    try:
        with np.load(path) as z:
            d = np.asarray(z["distance_mm"], float)
        return d if d.shape == (n,) else np.full(n, np.nan)
    except (OSError, ValueError, KeyError):
        return np.full(n, np.nan)


def _number(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _fmt_stat(st):
    if not st or st.get("mean") is None:
        return "–"
    return f"{st['mean']:.2f} ± {st['std']:.2f} (n={st['n']})"


def _key(item_id):
    """An item id as a name for files and URLs: letters, digits, '-' and '_'."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in item_id)


def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ASSETS)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, k=2: "–" if v is None else f"{v:.{k}f}"
    env.filters["yesno"] = lambda v: "–" if v is None else ("yes" if v else "no")
    return env.get_template("report.html.j2")
