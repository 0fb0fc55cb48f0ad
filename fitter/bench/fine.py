"""Fine-stage benchmarks: detail recovery on synthetic faces with known wrinkles and light, and medium
vs fine on renders of the real scans."""

from pathlib import Path

import numpy as np

from ..detection import landmarks as lmk
from ..detection.segment import parse_face, person_mask
from ..errors import NoFaceError
from ..geometry.camera import look_at_face
from ..photo.fine import refine_depth
from ..photo.pipeline import fit_photo
from ..prepared import PreparedModel
from ..registration.evaluate import micc_error
from ..registration.scan import render_colors

from .common import SYNTH_SEED, ground_truth_scans, scan_render
from .synthetic import detailed_face, fine_case_errors, random_sh, sh_render


def _solver_shares(fine_result):
    """Where the stage's time went: Ceres in total, our Python inside its callbacks (vectorised evaluation
    and copies), its linear solver, and the rest of the stage (crop, render, lighting, albedo)."""
    ceres = sum(s["seconds"] for s in fine_result.solver)
    python = sum(s["python_seconds"] for s in fine_result.solver)
    linear = sum(s["linear_solver_seconds"] for s in fine_result.solver)
    return {"ceres_s": ceres, "python_callbacks_s": python, "linear_solver_s": linear,
            "ceres_other_s": ceres - python - linear, "outside_ceres_s": fine_result.seconds - ceres}


def summarise_fine(rows):
    """Means over the scored renders, per specular setting, of the fine_synthetic rows."""
    out = {}
    keys = ("medium_normal_deg", "fine_normal_deg", "medium_depth_mm", "fine_depth_mm", "true_detail_rms_mm",
            "detail_correlation", "detail_relative_error", "perfect_detail_normal_deg", "smooth_truth_normal_deg",
            "true_base_base_normal_deg", "true_base_fine_normal_deg", "true_base_base_depth_mm",
            "true_base_fine_depth_mm", "true_base_detail_correlation", "true_base_detail_relative_error",
            "rms_before", "rms_after",
            "fine_s", "ceres_s", "python_callbacks_s", "linear_solver_s", "ceres_other_s", "outside_ceres_s",
            "unknowns")
    for spec in sorted({r["specular"] for r in rows}):
        ok = [r for r in rows if r["specular"] == spec and "fine_depth_mm" in r]
        d = {"renders": len([r for r in rows if r["specular"] == spec]), "scored": len(ok)}
        d.update({k: round(float(np.mean([r[k] for r in ok])), 4) for k in keys if k in ok[0]} if ok else {})
        if ok:
            d["fine_s_max"] = round(float(np.max([r["fine_s"] for r in ok])), 3)
            d["normal_error_change_pct"] = round(100 * (d["fine_normal_deg"] / d["medium_normal_deg"] - 1), 1)
            d["perfect_detail_change_pct"] = round(100 * (d["perfect_detail_normal_deg"] / d["medium_normal_deg"] - 1), 1)
            if "true_base_fine_normal_deg" in d:
                d["true_base_change_pct"] = round(
                    100 * (d["true_base_fine_normal_deg"] / d["true_base_base_normal_deg"] - 1), 1)
        out[f"specular_{spec}"] = d
    return out


def _fine_from_true_base(prepared, V_base, camera, image, face, config, V_true, F_true, V_smooth):
    """The fine stage started from the true shape without detail (model topology) and the true camera,
    scored like the pipeline's result; fields prefixed `true_base_`."""
    labels = parse_face(image, face, person_mask(image))
    f = refine_depth(prepared, V_base, camera, image, labels, config)
    e = fine_case_errors(f, V_true, F_true, camera.R, camera.t, V_smooth)
    keep = ("medium_normal_deg", "fine_normal_deg", "medium_depth_mm", "fine_depth_mm", "detail_correlation",
            "detail_relative_error")
    return {"true_base_" + k.replace("medium_", "base_"): e[k] for k in keep}


def fine_scans(name="ict", data_dir=None, image_size=640, focal_px=1000.0, yaws=(-45, -30, -15, 0, 15, 30, 45),
               seed=0, config=None, log=print):
    """MICC-protocol error of medium vs fine on renders of the real scans (as `scans`, pitch 0, the yaws
    given), through the photo pipeline with the focal length given."""


    prepared = PreparedModel.load(name)
    model = prepared.model
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    mask = model.region_mask("outer_skin")
    rng = np.random.default_rng(seed)
    results = {}
    for folder, scan, frame in ground_truth_scans(Path(data_dir), log):
        gt_pts = lmk.five_points(lmk.to_68(np.nan_to_num(frame.landmarks)))
        colors = render_colors(scan)
        rows = []
        for yaw in yaws:
            cam, img = scan_render(scan, frame, colors, yaw, 0.0, rng, image_size, focal_px)
            try:
                r = fit_photo(f"{folder}_{yaw}.png", prepared, ("coarse", "medium", "fine"), focal=focal_px, image=img,
                              texture_size=256, fine_config=config)[0]
            except NoFaceError:
                rows.append({"yaw": yaw, "detected": False})
                continue
            row = {"yaw": yaw, "detected": True, "fine": r.fine is not None}
            for tag, Vr in (("medium", r.medium.vertices), ("fine", r.vertices)):
                e = micc_error(Vr, model.faces, scan.V, scan.F, frame.nose_tip, Vr[ref[30]], lmk.five_points(Vr[ref]),
                               gt_pts, recon_mask=mask)
                row[f"{tag}_mm"] = e["mean_mm"]
                row[f"{tag}_rmse_mm"] = e["rmse_mm"]
            if r.fine is not None:
                row["fine_s"] = r.fine.seconds
            rows.append(row)
        ok = [r for r in rows if r.get("detected")]
        res = {"renders": len(rows), "detected": len(ok), "refined": sum(r["fine"] for r in ok)}
        for k in ("medium_mm", "fine_mm", "medium_rmse_mm", "fine_rmse_mm", "fine_s"):
            vals = [r[k] for r in ok if k in r]
            res[k] = round(float(np.mean(vals)), 4) if vals else None
        results[folder] = res
        log(f"{folder}: {res}")
    return results


def fine_synthetic(name="ict", n_faces=4, seed=SYNTH_SEED + 3, image_size=640, focal_px=1000.0,
                   yaws=(-20, 0, 20), specular=(0.0, 0.35), config=None, true_base=True, log=print):
    """Synthetic faces with known fine detail (`detailed_face`), rendered with known SH lighting and
    albedo (`sh_render`), without and with specular highlights; the photo pipeline (coarse, medium,
    fine, focal given) is run on each render and the medium and fine depth maps are scored against the
    truth (`fine_case_errors`). With true_base, the fine stage is also run from the true smooth shape
    and camera (`true_base_*` fields): its own detail recovery, without the upstream shape error."""
    prepared = PreparedModel.load(name)
    model = prepared.model
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_faces):
        V0, V, F, A, V_smooth = detailed_face(prepared, rng)
        center = V[model.region("face")].mean(0)
        for yaw in yaws:
            for spec in specular:
                cam = look_at_face(center, yaw, rng.uniform(-10, 10), rng.uniform(550, 650), focal_px,
                                   image_size, image_size)
                img, _ = sh_render(V, F, cam, A * rng.uniform(0.85, 1.1), random_sh(rng), specular=spec)
                try:
                    r = fit_photo(f"synthetic_{k}_{yaw}.png", prepared, ("coarse", "medium", "fine"), focal=focal_px,
                                  image=img, texture_size=256, fine_config=config)[0]
                except NoFaceError:
                    rows.append({"face": k, "yaw": yaw, "specular": spec, "detected": False})
                    continue
                if r.fine is None:
                    rows.append({"face": k, "yaw": yaw, "specular": spec, "detected": True,
                                 "fine_error": r.times.get("fine_error")})
                    continue
                row = {"face": k, "yaw": yaw, "specular": spec, "detected": True, "fine_s": r.fine.seconds,
                       "crop_px": r.fine.camera.width, "unknowns": int(r.fine.unknown.sum()),
                       "rms_before": r.fine.photometric_rms_before, "rms_after": r.fine.photometric_rms_after}
                row.update(_solver_shares(r.fine))
                row.update(fine_case_errors(r.fine, V, F, cam.R, cam.t, V_smooth))
                if true_base:
                    row.update(_fine_from_true_base(prepared, V0, cam, img, r.landmarks, config, V, F, V_smooth))
                rows.append(row)
                log(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows
