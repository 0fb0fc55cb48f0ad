"""Coarse-stage benchmarks: synthetic ground truth and Florence-style renders of real scans, with eos
(eos-py) fitted on the same landmarks."""
import time

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..detection import landmarks as lmk
from ..errors import NoFaceError
from ..geometry.camera import Camera, look_at_face
from ..geometry.render import get_renderer
from ..photo.coarse import fit_landmarks
from ..photo.medium import deform_redetected, deform_to_landmarks
from ..prepared import PreparedModel
from ..registration.evaluate import micc_error
from ..registration.scan import render_colors

from .common import (FLORENCE_PITCHES, FLORENCE_YAWS, SYNTH_PITCHES, SYNTH_SEED, SYNTH_YAWS, face_error,
                     face_submesh, ground_truth_scans, rotation_error_deg, scan_render)


class EosPeer:
    """eos (eos-py) fitted on the same landmarks: an eos model built from the same ICT arrays (face
    area, identity PCA + 53 blendshapes), landmarks mapped to the vertex nearest to our embedding of
    each non-contour MediaPipe point, eos's defaults otherwise (scaled-orthographic camera)."""
    def __init__(self, model, emb):
        import eos

        self.eos = eos
        F, old = face_submesh(model)
        self.face = old
        K = model.identity_basis[:, old].reshape(model.n_identity, -1).T.astype(np.float64)  # (3n, K)
        norms = np.linalg.norm(K, axis=0)
        shape = eos.morphablemodel.PcaModel(model.mean[old].ravel().astype(np.float32),
                                            (K / norms).astype(np.float32), (norms ** 2).astype(np.float32),
                                            F.tolist())
        blend = [eos.morphablemodel.Blendshape(n, model.expression_basis[j][old].ravel().astype(np.float32))
                 for j, n in enumerate(model.expression_names)]
        # each non-contour landmark -> nearest face vertex of its embedded point on the mean shape
        P = emb.points(model.mean, model.faces, 0.0)
        tree = cKDTree(model.mean[old])
        contour = set(emb.contour_ids.tolist())
        self.ids = [i for i in range(478) if i not in contour and i < 468]
        _, vid = tree.query(P[self.ids])
        defs = {f"mp{i}": int(v) for i, v in zip(self.ids, vid)}  # non-numeric names: eos must use these
        self.vertex_of = dict(zip(self.ids, vid))
        self.model = eos.morphablemodel.MorphableModel(shape, blend, eos.morphablemodel.PcaModel(), defs)
        self.mapper = eos.core.LandmarkMapper()
        self.n_identity = model.n_identity

    def fit(self, points, width, height):
        eos = self.eos
        lms = [eos.core.Landmark(f"mp{i}", np.asarray(points[i], np.float32)) for i in self.ids]
        mesh, rp, shape_c, blend_c = eos.fitting.fit_shape_and_pose(self.model, lms, self.mapper, width, height)
        V = np.asarray(mesh.vertices, np.float64)
        P = eos.fitting.get_3x4_affine_camera_matrix(rp, width, height)
        X = np.c_[V[[self.vertex_of[i] for i in self.ids]], np.ones(len(self.ids))]
        proj = (X @ np.asarray(P, np.float64).T)[:, :2]  # image pixels, y down (as the landmarks)
        R_gl = np.asarray(rp.get_modelview())[:3, :3]
        return V, proj, R_gl, np.asarray(shape_c), np.asarray(blend_c)


def coarse(name="ict", n_identities=6, seed=SYNTH_SEED, with_eos=True, image_size=640, focal_px=1000.0, log=print):
    """Synthetic ground-truth benchmark of the coarse fit (and eos on the same detected landmarks).

    Random identities (N(0, 1)) with sparse random expressions (3 blendshapes in [0, 0.5]) rendered at
    yaw -60..60 (step 30) x pitch -20/0/20 with random light and skin tone; MediaPipe detects the
    landmarks; each fit is scored by the face-area vertex error after similarity alignment (mm), the
    rotation error (degrees) and the landmark reprojection error (px). The mean face is the baseline.
    """
    prepared = PreparedModel.load(name)
    model, emb = prepared.model, prepared.embedding
    prepared.landmark_basis
    rng = np.random.default_rng(seed)
    albedo0 = prepared.painted_albedo
    F = prepared.render_faces
    peer = EosPeer(model, emb) if with_eos else None
    rows, joint = [], []
    for k in range(n_identities):
        views = []
        alpha = rng.standard_normal(model.n_identity)
        beta = np.zeros(model.n_expression)
        beta[rng.choice(model.n_expression, 3, replace=False)] = rng.uniform(0, 0.5, 3)
        V = model.shape(alpha, beta)
        tone = rng.uniform(0.75, 1.15)
        for yaw in SYNTH_YAWS:
            for pitch in SYNTH_PITCHES:
                cam = look_at_face(V[model.regions["face"]].mean(0), yaw, pitch, rng.uniform(550, 700), focal_px,
                                   image_size, image_size)
                light = (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.2), -1.0)
                img = get_renderer().render(V, F, cam, vertex_colors=np.clip(albedo0 * tone, 0, 1), light_dir=light,
                                            background=tuple(rng.uniform(0.1, 0.6, 3))).color_uint8()
                row = {"identity": k, "yaw": yaw, "pitch": pitch}
                t0 = time.perf_counter()
                try:
                    pts = lmk.detect_landmarks(img)[0].points
                except NoFaceError:
                    row["detected"] = False
                    rows.append(row)
                    continue
                row.update(detected=True, detect_ms=1e3 * (time.perf_counter() - t0))
                views.append(pts)
                row["mean_face_mm"] = face_error(model, model.mean, V)
                for tag, f in (("ours_known_f", focal_px), ("ours", None)):
                    fit = fit_landmarks(prepared, [pts], [Camera.for_image(image_size, image_size, f)], free_focal=f is None)
                    im = fit.images[0]
                    row[f"{tag}_ms"] = 1e3 * fit.seconds
                    row[f"{tag}_mm"] = face_error(model, model.shape(fit.identity, im.expression), V)
                    row[f"{tag}_rot_deg"] = rotation_error_deg(im.camera.R, cam.R)
                    row[f"{tag}_px"] = im.error_px
                if peer is not None:
                    t0 = time.perf_counter()
                    Ve, proj, R_gl, _, _ = peer.fit(pts, image_size, image_size)
                    row["eos_ms"] = 1e3 * (time.perf_counter() - t0)
                    Vfull = V.copy()
                    Vfull[peer.face] = Ve
                    row["eos_mm"] = face_error(model, Vfull, V)
                    row["eos_rot_deg"] = rotation_error_deg(np.diag([1.0, -1.0, -1.0]) @ R_gl, cam.R)
                    row["eos_px"] = float(np.median(np.linalg.norm(proj - pts[peer.ids], axis=1)))
                rows.append(row)
        if views:  # all views of this identity in one solve: one identity, per-view pose and expression
            fit = fit_landmarks(prepared, views, [Camera.for_image(image_size, image_size)] * len(views),
                                free_focal=True)
            joint.append({"views": len(views), "mm": face_error(model, model.shape(fit.identity), model.shape(alpha)),
                          "mean_face_mm": face_error(model, model.mean, model.shape(alpha)),
                          "ms_per_view": 1e3 * fit.seconds / len(views)})
        log(f"identity {k + 1}/{n_identities} done")
    out = summarise_coarse(rows, with_eos)
    out["joint_identity"] = {k: round(float(np.mean([j[k] for j in joint])), 3)
                             for k in ("views", "mm", "mean_face_mm", "ms_per_view")} if joint else None
    return out


def summarise_coarse(rows, with_eos):
    ok = [r for r in rows if r.get("detected")]
    out = {"renders": len(rows), "detected": len(ok)}
    keys = ["mean_face_mm", "ours_known_f_mm", "ours_mm", "ours_known_f_rot_deg", "ours_rot_deg", "ours_known_f_px",
            "ours_px", "ours_known_f_ms", "ours_ms", "detect_ms"]
    if with_eos:
        keys += ["eos_mm", "eos_rot_deg", "eos_px", "eos_ms"]
    for k in keys:
        vals = np.array([r[k] for r in ok])
        out[k] = {"mean": round(float(vals.mean()), 3), "median": round(float(np.median(vals)), 3)}
    by_yaw = {}
    for yaw in SYNTH_YAWS:
        sel = [r for r in ok if r["yaw"] == yaw]
        if sel:
            by_yaw[str(yaw)] = {k: round(float(np.mean([r[k] for r in sel])), 3)
                                for k in ("mean_face_mm", "ours_mm") + (("eos_mm",) if with_eos else ())}
    out["by_yaw_mean_mm"] = by_yaw
    if with_eos:
        out["ratio_eos_over_ours_mm"] = round(out["eos_mm"]["mean"] / out["ours_mm"]["mean"], 3)
        out["ratio_eos_over_ours_ms"] = round(out["eos_ms"]["median"] / out["ours_ms"]["median"], 3)
    return out


def scans(name="ict", data_dir=None, with_eos=True, image_size=640, focal_px=1000.0, seed=0, log=print):
    """Fit renders of real scans (yaw -90..90 step 15 x pitch -20/0/20, random light, 640², f = 1000 px,
    650 mm) and score each fit by the MICC protocol against the scan; the mean face and eos (on the same
    landmarks) are scored the same way."""


    data_dir = Path(data_dir)
    prepared = PreparedModel.load(name)
    model, emb = prepared.model, prepared.embedding
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    mask = model.region_mask("outer_skin")
    peer = EosPeer(model, emb) if with_eos else None
    rng = np.random.default_rng(seed)
    results = {}
    for folder, scan, frame in ground_truth_scans(data_dir, log):
        gt_pts = lmk.five_points(lmk.to_68(np.nan_to_num(frame.landmarks)))
        colors = render_colors(scan)
        rows = []
        for yaw in FLORENCE_YAWS:
            for pitch in FLORENCE_PITCHES:
                cam, img = scan_render(scan, frame, colors, yaw, pitch, rng, image_size, focal_px)
                row = {"yaw": yaw, "pitch": pitch}
                try:
                    pts = lmk.detect_landmarks(img)[0].points
                except NoFaceError:
                    rows.append(dict(row, detected=False))
                    continue
                row["detected"] = True
                fit = fit_landmarks(prepared, [pts], [Camera.for_image(image_size, image_size, focal_px)])
                im = fit.images[0]
                V = model.shape(fit.identity, im.expression)
                depth = get_renderer().render(V, prepared.render_faces, im.camera).depth
                Vm = deform_to_landmarks(prepared, V, im.camera, pts, depth).vertices
                Vr = deform_redetected(prepared, V, im.camera, pts, depth).vertices
                for tag, Vr in (("ours", V), ("ours_medium", Vm), ("ours_medium_redetected", Vr),
                                ("mean_face", model.mean)):
                    e = micc_error(Vr, model.faces, scan.V, scan.F, frame.nose_tip, Vr[ref[30]],
                                   lmk.five_points(Vr[ref]), gt_pts, recon_mask=mask)
                    row[f"{tag}_mm"] = e["mean_mm"]
                    row[f"{tag}_rmse_mm"] = e["rmse_mm"]
                if peer is not None:
                    Ve = peer.fit(pts, image_size, image_size)[0]
                    Vfull = model.mean.copy()
                    Vfull[peer.face] = Ve
                    fmask = np.zeros(model.n_vertices, bool)
                    fmask[peer.face] = True
                    e = micc_error(Vfull, model.faces, scan.V, scan.F, frame.nose_tip, Vfull[ref[30]],
                                   lmk.five_points(Vfull[ref]), gt_pts, recon_mask=fmask & mask)
                    row["eos_mm"] = e["mean_mm"]
                rows.append(row)
        ok = [r for r in rows if r.get("detected")]
        res = {"renders": len(rows), "detected": len(ok),
               "detected_yaws": sorted({r["yaw"] for r in ok})}
        for k in ("mean_face_mm", "ours_mm", "ours_rmse_mm", "ours_medium_mm", "ours_medium_rmse_mm", "ours_medium_redetected_mm",
                  "ours_medium_redetected_rmse_mm") + (
                ("eos_mm",) if peer else ()):
            res[k] = round(float(np.mean([r[k] for r in ok])), 3) if ok else None
        results[folder] = res
        log(f"{folder}: {res}")
    return results
