"""Medium-stage benchmarks: the solve against scipy and libigl, and coarse vs medium on out-of-span
synthetic faces."""
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from ..detection import landmarks as lmk
from ..errors import NoFaceError
from ..geometry.camera import Camera, look_at_face
from ..geometry.render import get_renderer
from ..model.detector_bias import detect_on_fit
from ..photo.coarse import fit_landmarks
from ..photo.medium import LaplacianDeformer, deform_redetected, deform_to_landmarks
from ..prepared import PreparedModel
from ..registration.evaluate import micc_error

from .common import SYNTH_SEED, SYNTH_YAWS, face_error, timeit
from .synthetic import smooth_displacement


def medium_speed(name="ict", repeats=30, log=print):
    """Factorisation and per-photo solve of the medium stage's face-area system (yaw bin 0°), against
    scipy's spsolve and libigl's min_quad_with_fixed on the same matrix and right-hand side."""

    model = PreparedModel.load(name).model
    t0 = time.perf_counter()
    d = LaplacianDeformer(PreparedModel(model))  # includes the landmark basis and CHOLMOD's symbolic analysis
    build_s = time.perf_counter() - t0
    b = d.yaw_bin(0.0)
    a = d.bin_active[b]
    rng = np.random.default_rng(0)
    targets = rng.normal(0.0, 1.0, (478, 3))
    t0 = time.perf_counter()
    d.solve(b, targets)  # first photo of the bin: numeric factorisation (reusing the analysis) + solve
    first_s = time.perf_counter() - t0
    solve_s = timeit(lambda: d.solve(b, rng.normal(0.0, 1.0, (478, 3))), repeats)[0]
    A = d.system_matrix(b).tocsc()
    rhs = np.zeros((len(d.domain), 3))
    np.add.at(rhs, d.bin_vertices[b][a], d.weights[a, None] * targets[a])
    D = d.solve(b, targets)[0]
    spsolve_s = timeit(lambda: sla.spsolve(A, rhs), max(3, repeats // 10))[0]
    out = {"vertices": int(len(d.domain)), "nnz_matrix": int(A.nnz), "constraints": int(a.sum()),
           "model_prepare_ms": round(1e3 * build_s, 1), "first_photo_of_bin_ms": round(1e3 * first_s, 2),
           "solve_ms": round(1e3 * solve_s, 3), "spsolve_ms": round(1e3 * spsolve_s, 2),
           "ratio_spsolve_over_solve": round(spsolve_s / solve_s, 1),
           "max_abs_diff_vs_spsolve_mm": float(np.abs(sla.spsolve(A, rhs) - D).max())}
    try:
        import igl
    except ImportError:
        out["libigl"] = "not installed (pip install libigl)"
        log("libigl not installed: skipping its row")
        return out
    A2 = sp.csc_matrix(2.0 * A)  # libigl minimises ½ zᵀ A z + zᵀ B
    empty = np.zeros(0, np.int64)

    def igl_full():
        return igl.min_quad_with_fixed(A2, -2.0 * rhs, empty, np.zeros((0, 3)), sp.csc_matrix((0, A.shape[0])),
                                       np.zeros((0, 3)), True)

    data = igl.min_quad_with_fixed_data()
    t0 = time.perf_counter()
    igl.min_quad_with_fixed_precompute(A2, empty, sp.csc_matrix((0, A.shape[0])), True, data)
    igl_pre_s = time.perf_counter() - t0
    igl_solve_s = timeit(lambda: igl.min_quad_with_fixed_solve(data, -2.0 * rhs, np.zeros((0, 3)),
                                                                np.zeros((0, 3))), repeats)[0]
    Z = igl.min_quad_with_fixed_solve(data, -2.0 * rhs, np.zeros((0, 3)), np.zeros((0, 3)))
    out.update(libigl_precompute_ms=round(1e3 * igl_pre_s, 1), libigl_solve_ms=round(1e3 * igl_solve_s, 3),
               libigl_full_ms=round(1e3 * timeit(igl_full, max(3, repeats // 10))[0], 1),
               ratio_libigl_solve_over_solve=round(igl_solve_s / solve_s, 2),
               max_abs_diff_vs_libigl_mm=float(np.abs(np.asarray(Z) - D).max()))
    return out


def medium_synthetic(name="ict", n_identities=6, seed=SYNTH_SEED + 1, image_size=640, focal_px=1000.0, log=print):
    """Out-of-span synthetic faces (a random ICT identity + `smooth_displacement`), rendered at yaw
    -60..60 (step 30), random pitch in ±15 and light: coarse vs coarse+medium, face-area vertex error
    after similarity alignment and MICC-protocol error against the true mesh. Also reports, per landmark
    region, how the detected residual after the coarse fit relates to the true one (correlation and
    least-squares gain: the evidence TARGET_GAIN in fitter.photo.medium is set from)."""
    prepared = PreparedModel.load(name)
    model, emb = prepared.model, prepared.embedding
    rng = np.random.default_rng(seed)
    albedo = prepared.painted_albedo
    F = prepared.render_faces
    face = model.regions["face"]
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    skin = model.region_mask("outer_skin")
    F_skin = model.faces_in("outer_skin")  # the ground truth is scored on its outer skin, as a scan would be
    groups = lmk.groups()
    evidence = {g: [] for g in groups}
    rows = []
    for k in range(n_identities):
        V = model.shape(rng.standard_normal(model.n_identity))
        V = V + smooth_displacement(V, face, rng)
        for yaw in SYNTH_YAWS:
            cam = look_at_face(V[face].mean(0), yaw, rng.uniform(-15, 15), 600, focal_px, image_size, image_size)
            light = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.1), -1.0)
            img = get_renderer().render(V, F, cam, vertex_colors=albedo, light_dir=light,
                                        background=tuple(rng.uniform(0.1, 0.6, 3))).color_uint8()
            try:
                pts = lmk.detect_landmarks(img)[0].points
            except NoFaceError:
                rows.append({"yaw": yaw, "detected": False})
                continue
            fit = fit_landmarks(prepared, [pts], [Camera.for_image(image_size, image_size)], free_focal=True)
            im = fit.images[0]
            Vc = model.shape(fit.identity, im.expression)
            depth = get_renderer().render(Vc, F, im.camera).depth
            try:
                on_fit = detect_on_fit(prepared, Vc, im.camera, im.fitted_2d)
            except NoFaceError:
                on_fit = None
            mr = deform_to_landmarks(prepared, Vc, im.camera, pts, depth)
            redet = deform_redetected(prepared, Vc, im.camera, pts, depth, on_fit=on_fit)
            truth = cam.project(emb.points(V, model.faces, yaw))
            for g, idx in groups.items():
                evidence[g].append(np.stack([truth[idx] - im.fitted_2d[idx], pts[idx] - im.fitted_2d[idx],
                                             pts[idx] - (im.fitted_2d if on_fit is None else on_fit)[idx]]))
            row = {"yaw": yaw, "detected": True, "medium_ms": 1e3 * mr.seconds, "redetected": redet.residual == "on_fit",
                   "medium_redetected_ms": 1e3 * redet.seconds}
            nose = V[ref[30]]
            for tag, Vr in (("coarse", Vc), ("medium", mr.vertices), ("medium_redetected", redet.vertices)):
                row[f"{tag}_mm"] = face_error(model, Vr, V)
                row[f"{tag}_micc_mm"] = micc_error(Vr, model.faces, V, F_skin, nose, Vr[ref[30]],
                                                   lmk.five_points(Vr[ref]), lmk.five_points(V[ref]),
                                                   recon_mask=skin)["mean_mm"]
            rows.append(row)
        log(f"identity {k + 1}/{n_identities} done")
    ok = [r for r in rows if r.get("detected")]
    out = {"renders": len(rows), "detected": len(ok)}
    out["redetected"] = sum(r["redetected"] for r in ok)
    for key in ("coarse_mm", "medium_mm", "medium_redetected_mm", "coarse_micc_mm", "medium_micc_mm",
                "medium_redetected_micc_mm", "medium_ms", "medium_redetected_ms"):
        out[key] = round(float(np.mean([r[key] for r in ok])), 4)
    out["medium_minus_coarse_mm"] = round(out["medium_mm"] - out["coarse_mm"], 4)
    out["medium_minus_coarse_micc_mm"] = round(out["medium_micc_mm"] - out["coarse_micc_mm"], 4)
    out["by_yaw"] = {str(y): {k: round(float(np.mean([r[k] for r in ok if r["yaw"] == y])), 4)
                              for k in ("coarse_mm", "medium_mm", "medium_redetected_mm", "coarse_micc_mm",
                                        "medium_micc_mm", "medium_redetected_micc_mm")}
                     for y in SYNTH_YAWS if any(r["yaw"] == y for r in ok)}
    ev = {}
    for g, v in evidence.items():
        if not v:
            continue
        v = np.concatenate(v, axis=1)
        t, d, q = v[0].ravel(), v[1].ravel(), v[2].ravel()
        ev[g] = {"corr": round(float(np.corrcoef(t, d)[0, 1]), 3), "gain": round(float(t @ d / (d @ d)), 3),
                 "on_fit_corr": round(float(np.corrcoef(t, q)[0, 1]), 3),
                 "on_fit_gain": round(float(t @ q / (q @ q)), 3),
                 "true_rms_px": round(float(np.sqrt((t * t).mean())), 3),
                 "detected_rms_px": round(float(np.sqrt((d * d).mean())), 3)}
    out["evidence_per_region"] = ev
    return out
