"""Beyond-landmarks benchmark (issue 16): the landmark joint fit → + the model-space refinement
(fitter.video.bundle) → + the multi-view medium stage (fitter.video.sweep), per setting.

- `textured_identity`: a random identity filmed turning under a fixed light (fitter.bench.synthetic.
  textured_turntable), with skin texture ("noise") and without ("flat": shading only); exact truth, the
  landmarks the true ones plus 2 px noise. Vertex error of the identity (fitter.bench.common.face_error).
- `textured_video`: the same through the whole video path (detector landmarks, frame selection), with
  skin texture and with the painted albedo alone.
- `mini_micc`: the mini MICC videos (fitter.bench.micc_mini: the scans registered to the model and wearing
  a real photo's skin; the scans with their own texture or painted in one skin tone; the synthetic
  identity with the painted albedo): MICC and vertex error per setting of the landmark joint fit, the
  refinement with SIFT tracks alone, with SIFT and flow tracks, the default pipeline (refinement and
  medium stage as their gates decide) and both forced; tracks of each kind; time of each step.
- `track_accuracy`: the tracks' observations against the true surface and cameras of the skin-textured
  subjects' videos.
- `photo_pairs`: two photos of each skin-textured subject 30°, 45° and 60° apart: each alone, the
  landmark joint fit and the default joint fit, each with an expression per photo and with one shared.
"""
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..datasets.micc import SETTINGS, load_scans, score_against_scans
from ..detection import landmarks as lmk
from ..geometry.camera import MODEL_TO_OPENCV, Camera, intrinsics, rotation_matrix
from ..geometry.mesh import read_obj_vertices, write_obj
from ..photo.coarse import fit_landmarks
from ..prepared import PreparedModel
from ..video import reconstruct_photos, reconstruct_video
from ..video.bundle import GATE_IOD, MIN_TRACKS, BundleView, bundle_adjust
from ..video.flow import flow_tracks, follow_skin_points
from ..video.frames import read_frames
from ..video.refine import refine_views
from ..video.sift import build_tracks
from ..video.sweep import medium_stage
from ..video.tracks import lift
from .common import SCANS, face_error
from .micc_mini import SKIN_PHOTOS, film_cameras, skin_subject, write_gt_landmarks
from .synthetic import textured_turntable
from .video import scans_of


def textured_identity(prepared, seeds=(1, 2, 3), textures=("noise", "flat"), log=print):
    model = prepared.model
    zero = np.zeros(model.n_expression)
    rows = []
    for texture in textures:
        for seed in seeds:
            alpha, V, views = textured_turntable(prepared, np.random.default_rng(seed), texture)
            fit = fit_landmarks(prepared, [u for _, _, u in views], [Camera.for_image(c.width, c.height) for _, c, _ in views],
                                free_focal=True)
            row = {"texture": texture, "seed": seed, "landmarks_mm": face_error(model, model.shape(fit.identity, zero), V)}
            t0 = time.perf_counter()
            out = bundle_adjust(prepared, [BundleView(im, f.camera, f.expression, u)
                                           for (im, _, u), f in zip(views, fit.images)], fit.identity, min_tracks=0)
            row["refine_s"] = time.perf_counter() - t0
            row["tracks"] = out.info["rounds"][0]["tracks"]
            row["applied_by_default"] = row["tracks"] >= MIN_TRACKS
            row["refined_mm"] = face_error(model, model.shape(out.identity, zero), V)
            t0 = time.perf_counter()
            D, info = medium_stage(prepared, [im for im, _, _ in views], out.cameras, out.identity,
                                   [f.expression for f in fit.images], min_confident=0.0)
            row["medium_s"] = time.perf_counter() - t0
            row["medium_mm"] = face_error(model, model.shape(out.identity, zero) + D, V)
            row["confident_fraction"] = info["confident_fraction"]
            row["median_offset_mm"] = info["median_offset_mm"]
            row["medium_applied_by_default"] = info["applied"]
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            log(json.dumps(rows[-1]))
    return rows


def textured_video(prepared, seeds=(5, 6, 7), textures=("skin", "painted"), log=print):
    """The whole video path (detection, selection, joint fit) on frame folders of a random identity turning
    ±50° (21 frames; fitter.bench.synthetic.textured_turntable) with skin texture and with the painted albedo
    alone: vertex error of the landmark joint fit, after the refinement ("refined": what `facefit video`
    gives) and after the medium stage ("full": with --medium), each as the gates decide ("default") and
    forced; time of each step."""
    import cv2

    model = prepared.model
    zero = np.zeros(model.n_expression)
    rows = []
    for texture in textures:
        for seed in seeds:
            _, V, views = textured_turntable(prepared, np.random.default_rng(seed), texture, yaws=np.linspace(-50, 50, 21))
            with tempfile.TemporaryDirectory() as d:
                for k, (image, _, _) in enumerate(views):
                    cv2.imwrite(str(Path(d) / f"frame_{k:03d}.png"), image[:, :, ::-1])
                t0 = time.perf_counter()
                base = reconstruct_video(prepared, d, stride=1, refine=False)
                row = {"texture": texture, "seed": seed, "landmarks_s": time.perf_counter() - t0,
                       "views": len(base.joint.kept), "landmarks_mm": face_error(model, base.neutral, V)}
            for name, kwargs in (("default", {}), ("forced", {"min_tracks": 0, "min_confident": 0.0})):
                res = refine_views(prepared, base, medium=True, **kwargs)
                row[f"{name}_refined_mm"] = face_error(model, model.shape(res.identity, zero), V)
                row[f"{name}_full_mm"] = face_error(model, res.neutral, V)
                row[f"{name}_refine_s"] = res.times.get("refine_s", 0.0)
                row[f"{name}_medium_s"] = res.times.get("medium_s", 0.0)
                ms, med = res.refinement["model_space"], res.refinement["medium"]
                row[f"{name}_tracks"] = ms.get("tracks") if "tracks" in ms else ms["rounds"][0]["tracks"]
                row[f"{name}_applied"] = [ms["applied"], med.get("applied") if isinstance(med, dict) else False]
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            log(json.dumps(rows[-1]))
    return rows


def _truth_vertices(prepared, root, sid, t):
    """The known shape of a mini-MICC subject, model topology (None for a scan of another topology): the
    synthetic identity at neutral expression, or a skin subject's registered scan (its frontal1 mesh)."""
    model = prepared.model
    if t["kind"] == "synthetic":
        return model.shape(np.asarray(t["identity"]), np.zeros(model.n_expression))
    if t["kind"] == "skin":
        return read_obj_vertices(next((Path(root) / sid / "Model" / "frontal1" / "obj").glob("*.obj")))
    return None


MICC_VARIANTS = (  # name: refine_views options (None: the refinement not run)
    ("landmarks", None),
    ("sift", {"follow": False, "medium": False}),
    ("refined", {"medium": False}),
    ("default", {}),
    ("forced", {"min_tracks": 0, "min_confident": 0.0, "medium": True}),
)


def mini_micc(prepared, root, truth, log=print, kinds=("scan", "synthetic", "skin")):
    """Per subject and setting of the mini MICC (fitter.bench.micc_mini): MICC error (mean, mm) and, where
    the shape is known in the model's topology, the vertex error (synthetic: the neutral identity; skin:
    the video shape against the registered scan) of the landmark joint fit ("landmarks"), the refinement
    with SIFT tracks alone ("sift"), with SIFT and flow tracks ("refined"), the default pipeline
    ("default": the refinement and the medium stage as their gates decide) and both forced ("forced");
    tracks of each kind, what was applied, time of each step."""
    rows = []
    for sid, t in truth.items():
        if t["kind"] not in kinds:
            continue
        scans = scans_of(root, sid)
        V_true = _truth_vertices(prepared, root, sid, t)
        for setting in SETTINGS:
            t0 = time.perf_counter()
            base = reconstruct_video(prepared, Path(root) / sid / "Video" / f"{setting}.mjpg", refine=False)
            row = {"subject": sid, "kind": t["kind"], "source": t.get("source", "synthetic"), "setting": setting,
                   "landmarks_s": time.perf_counter() - t0, "views": len(base.joint.kept)}
            for name, kwargs in MICC_VARIANTS:
                res = base if kwargs is None else refine_views(prepared, base, shared_focal=True, **kwargs)
                row[f"{name}_mm"] = score_against_scans(prepared, res.shape, scans)[1]["mean_mm"]
                if V_true is not None:
                    row[f"{name}_vertex_mm"] = face_error(prepared.model, res.neutral if t["kind"] == "synthetic"
                                                          else res.shape, V_true)
                if kwargs is None:
                    continue
                for step in ("flow_s", "refine_s", "medium_s"):
                    row[f"{name}_{step}"] = res.times.get(step, 0.0)
                ms, med = res.refinement["model_space"], res.refinement["medium"]
                first = ms["rounds"][0] if ms.get("rounds") else ms
                row[f"{name}_tracks"] = [first.get("sift_tracks"), first.get("flow_tracks")]
                row[f"{name}_applied"] = [ms["applied"], med.get("applied") if isinstance(med, dict) else False]
                if isinstance(med, dict):
                    row[f"{name}_confident"] = med.get("confident_fraction")
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            log(json.dumps(rows[-1]))
    return rows


def track_accuracy(prepared, root, truth, data_dir, seconds=10.0, fps=25.0, log=print):
    """How far the tracks' observations lie from where the true surface point projects, on the mini MICC's
    skin-textured subjects (their shape and every frame's camera are known: fitter.bench.micc_mini's
    `skin_subject` and `film_cameras`; seconds and fps as the dataset was filmed): per setting and kind
    (SIFT, flow), each track's first observation lifted onto the true mesh through its frame's true camera,
    the others compared with that point's true projection (px and % of the interocular distance)."""
    F = prepared.render_faces
    everywhere = np.ones(len(F), bool)
    rows = []
    for sid, t in truth.items():
        if t["kind"] != "skin":
            continue
        folder, mesh, texture, arbitrary = next(s for s in SCANS if s[0] == t["source"])
        V, _, subject = skin_subject(prepared, data_dir, folder, mesh, texture, arbitrary, t["photo"])
        for setting in SETTINGS:
            cams = film_cameras(subject, setting, seconds, fps)
            base = reconstruct_video(prepared, Path(root) / sid / "Video" / f"{setting}.mjpg", refine=False)
            kept, fits = base.kept_views, base.joint.fit.images
            views = [BundleView(v.image, im.camera, im.expression, v.face.points) for v, im in zip(kept, fits)]
            scanned = [(r.index, r.face.points) for r in base.records if r.face is not None]
            obs = follow_skin_points(prepared, read_frames(base.source, stride=1),
                                     [(v.index, b) for v, b in zip(kept, views)], scanned, base.identity)
            true_cams = [cams[v.index] for v in kept]
            iod = float(np.median([lmk.outer_interocular(v.landmarks) for v in views]))
            row = {"subject": sid, "source": t["source"], "setting": setting, "interocular_px": round(iod, 1)}
            for kind, tr in (("sift", build_tracks(prepared, views, base.identity, GATE_IOD[0])),
                             ("flow", flow_tracks(prepared, views, base.identity, obs, GATE_IOD[0]))):
                first = np.unique(tr.track, return_index=True)[1]
                X, ok = np.zeros((tr.n, 3)), np.zeros(tr.n, bool)
                for k, cam in enumerate(true_cams):
                    sel = first[tr.view[first] == k]
                    tri, bary, _ = lift(V, F, cam, tr.uv[sel], everywhere)
                    good = tri >= 0
                    X[tr.track[sel[good]]] = (bary[good, :, None] * V[F[tri[good]]]).sum(1)
                    ok[tr.track[sel[good]]] = True
                later = np.setdiff1d(np.arange(len(tr.view)), first)
                later = later[ok[tr.track[later]]]
                err = np.zeros(len(later))
                for k, cam in enumerate(true_cams):
                    s = tr.view[later] == k
                    err[s] = np.linalg.norm(cam.project(X[tr.track[later[s]]]) - tr.uv[later[s]], axis=1)
                row[f"{kind}_tracks"] = int(tr.n)
                row[f"{kind}_error_px"] = [round(float(np.percentile(err, q)), 3) for q in (25, 50, 75, 90)] if len(err) else None
                row[f"{kind}_median_iod_pct"] = round(100 * float(np.median(err)) / iod, 3) if len(err) else None
            rows.append(row)
            log(json.dumps(row))
    return rows


PAIR_GAPS_DEG = (30, 45, 60)
PAIR_SIZE = (1200, 1600)     # portrait photos, as the real calibrated pair of issue 22
PAIR_FACE_PX = 300.0         # face width (150 mm) in the photos


def photo_pairs(prepared, data_dir, gaps=PAIR_GAPS_DEG, log=print):
    """Two photos of each skin-textured subject (fitter.bench.micc_mini's registered scans wearing a real
    photo's skin), the head turned ±gap/2 (one session: the same light and camera), 1200×1600 px with a
    300 px face: MICC error against the registered scan of each photo fitted alone, of the landmark joint
    fit (`fit --same-person --no-refine`) and of the default joint fit (`fit --same-person`), with the
    tracks the refinement found; and both joint fits with one expression for the two photos
    (`fit --same-person --same-expression`)."""
    import cv2

    model = prepared.model
    F_scan = model.faces_in("outer_skin")
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    W, H = PAIR_SIZE
    focal = 1.2 * max(W, H)
    rows = []
    for folder, mesh, texture, arbitrary in SCANS:
        photo = SKIN_PHOTOS.get(folder)
        if photo is None or not (Path(data_dir) / folder / mesh).is_file():
            continue
        V, frame, subject = skin_subject(prepared, data_dir, folder, mesh, texture, arbitrary, photo)
        with tempfile.TemporaryDirectory() as d:
            obj = Path(d) / "truth.obj"
            write_obj(obj, V, F_scan)
            lj = Path(d) / "truth.ljson"
            write_gt_landmarks(lj, V[ref])
            scans = load_scans([{"name": "frontal1", "path": str(obj), "landmarks": str(lj)}])
            rng = np.random.default_rng(7)
            for gap in gaps:
                paths = []
                for k, yaw in enumerate((-gap / 2.0, gap / 2.0)):
                    R = MODEL_TO_OPENCV @ rotation_matrix(yaw, 3.0, 0.0) @ subject.R_face
                    t = np.array([0.0, 0.0, focal * 150.0 / PAIR_FACE_PX]) - R @ subject.center
                    cam = Camera(intrinsics(focal, W, H), R, t, W, H)
                    color, r = subject.render(cam, (-0.3, -0.4, -0.87))
                    img = np.where(r.mask[..., None], color, 0.45) * 255 + rng.normal(0, 2.0, color.shape)
                    paths.append(str(Path(d) / f"{folder}_{gap}_{k}.jpg"))
                    cv2.imwrite(paths[-1], np.clip(img + 0.5, 0, 255).astype(np.uint8)[:, :, ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, 92])
                row = {"subject": folder, "photo": photo, "gap_deg": gap}
                singles = []
                for path in paths:
                    res = reconstruct_photos(prepared, [path], refine=False)
                    singles.append(score_against_scans(prepared, res.shape, scans)[1]["mean_mm"])
                row["single_mm"] = singles
                row["better_single_mm"] = min(singles)
                base = reconstruct_photos(prepared, paths, refine=False)
                row["joint_landmarks_mm"] = score_against_scans(prepared, base.shape, scans)[1]["mean_mm"]
                shared = reconstruct_photos(prepared, paths, refine=False, shared_expression=True)
                row["joint_shared_expression_landmarks_mm"] = score_against_scans(prepared, shared.shape, scans)[1]["mean_mm"]
                shared = reconstruct_photos(prepared, paths, shared_expression=True)
                row["joint_shared_expression_default_mm"] = score_against_scans(prepared, shared.shape, scans)[1]["mean_mm"]
                row["shared_expression_applied"] = shared.refinement["model_space"]["applied"]
                t0 = time.perf_counter()
                res = reconstruct_photos(prepared, paths)
                row["joint_default_s"] = time.perf_counter() - t0
                row["joint_default_mm"] = score_against_scans(prepared, res.shape, scans)[1]["mean_mm"]
                ms = res.refinement["model_space"]
                first = ms["rounds"][0] if ms.get("rounds") else ms
                row["tracks"] = first.get("tracks")
                row["applied"] = [ms["applied"], res.refinement["medium"].get("applied")
                                  if isinstance(res.refinement["medium"], dict) else False]
                row["interocular_px"] = [round(float(lmk.outer_interocular(v.face.points)), 1) for v in base.views]
                rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
                log(json.dumps(rows[-1]))
    return rows


def refine_bench(name="ict", root=None, part="all", data_dir=None, log=print):
    """The parts of the benchmark (see the module docstring): synthetic, video, micc (needs `root`, a mini
    MICC made by `facefit bench video`), pairs (needs `data_dir`, ../shared/data)."""
    prepared = PreparedModel.load(name)
    out = {}
    if part in ("all", "synthetic"):
        out["textured_identity"] = textured_identity(prepared, log=log)
    if part in ("all", "video"):
        out["textured_video"] = textured_video(prepared, log=log)
    if part in ("all", "micc"):
        if root is None or not (Path(root) / "truth.json").is_file():
            raise FileNotFoundError("the mini MICC part needs --root, a folder made by `facefit bench video`")
        out["mini_micc"] = mini_micc(prepared, root, json.loads((Path(root) / "truth.json").read_text()), log=log)
    if part in ("all", "tracks"):
        if root is None or data_dir is None:
            raise FileNotFoundError("the track-accuracy part needs --root (a mini MICC) and --scans (../shared/data)")
        out["track_accuracy"] = track_accuracy(prepared, root, json.loads((Path(root) / "truth.json").read_text()),
                                               data_dir, log=log)
    if part in ("all", "pairs"):
        if data_dir is None or not Path(data_dir).is_dir():
            raise FileNotFoundError("the photo-pair part needs --scans, the folder of ../shared/data")
        out["photo_pairs"] = photo_pairs(prepared, data_dir, log=log)
    return out
