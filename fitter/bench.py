"""Benchmarks measured by `facefit bench ...`; results are recorded in BENCHMARKS.md with the command."""
import os
import platform
import tempfile
import time

import numpy as np


def _timeit(fn, repeats):
    fn()  # warm-up (shader compile, buffer allocation)
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return float(np.median(t)), float(np.min(t))


def foundation(name="ict", repeats=20, install_from=None):
    """Render time of the model at 512² (index map + depth + normals + colour in one pass), against
    open3d's ray caster producing the same depth/triangle-id/barycentric maps (the peer a user would
    pick), per-vertex visibility, landmark detection on a render, and optionally a full install."""
    from . import landmarks as lmk
    from . import store
    from .camera import look_at_face
    from .embedding import DISTANCE_MM, FOCAL_PX, render_albedo
    from .render import get_renderer, vertex_visibility

    model = store.load_model(name)
    V = model.mean
    F = model.faces_in("render") if "render" in model.regions else model.faces
    size = 512
    cam = look_at_face(V[model.regions["face"]].mean(0), 20, 5, DISTANCE_MM, FOCAL_PX, size, size)
    albedo = render_albedo(model)
    renderer = get_renderer()
    res = renderer.render(V, F, cam, vertex_colors=albedo)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {renderer.ctx.info['GL_RENDERER']}",
           "model": name, "vertices": int(model.n_vertices), "triangles_rendered": int(len(F)),
           "image": f"{size}x{size}", "repeats": repeats}
    med, best = _timeit(lambda: renderer.render(V, F, cam, vertex_colors=albedo), repeats)
    out["render_ms_median"], out["render_ms_min"] = round(1e3 * med, 1), round(1e3 * best, 1)

    import open3d as o3d

    def o3d_raycast():
        scene = o3d.t.geometry.RaycastingScene()
        Vc = cam.to_camera(V).astype(np.float32)
        scene.add_triangles(o3d.core.Tensor(Vc), o3d.core.Tensor(F.astype(np.uint32)))
        u, v = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
        d = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u)], -1)
        rays = np.concatenate([np.zeros_like(d), d], -1).reshape(-1, 6)
        r = scene.cast_rays(o3d.core.Tensor(rays))
        return r["t_hit"].numpy(), r["primitive_ids"].numpy(), r["primitive_uvs"].numpy()

    pmed, pbest = _timeit(o3d_raycast, max(3, repeats // 4))
    out["peer_open3d_raycast_ms_median"] = round(1e3 * pmed, 1)
    out["render_speedup_vs_open3d"] = round(pmed / med, 2)
    t_hit, prim, _ = o3d_raycast()
    agree = (prim.reshape(size, size).astype(np.int64) == np.where(res.mask, res.triangle_id, 2**32 - 1)).mean()
    out["triangle_id_agreement_with_open3d"] = round(float(agree), 4)
    vmed, _ = _timeit(lambda: vertex_visibility(V, F, cam, res), repeats)
    out["visibility_ms_median"] = round(1e3 * vmed, 1)
    img = res.color_uint8()
    dmed, _ = _timeit(lambda: lmk.detect_landmarks(img), max(3, repeats // 4))
    out["mediapipe_detect_ms_median"] = round(1e3 * dmed, 1)
    if install_from:
        old = os.environ.get("FACEFIT_HOME")
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["FACEFIT_HOME"] = tmp
            try:
                t0 = time.perf_counter()
                store.install(name, install_from, progress=False, log=lambda *a: None)
                out["install_s"] = round(time.perf_counter() - t0, 1)
                info = store.model_info(name)
                out["embedding_build_s"] = info["landmark_embedding"].get("build_seconds")
            finally:
                if old is None:
                    os.environ.pop("FACEFIT_HOME", None)
                else:
                    os.environ["FACEFIT_HOME"] = old
    return out


# --- coarse stage -------------------------------------------------------------------------------
SYNTH_SEED = 777  # identities never used elsewhere (embedding: 0 and 1000; tests: < 100)
SYNTH_YAWS = (-60, -30, 0, 30, 60)
SYNTH_PITCHES = (-20, 0, 20)


def _face_error(model, V_fit, V_true):
    """Median distance (mm) over the face area after similarity alignment of V_fit onto V_true."""
    from .align import align

    face = model.regions["face"]
    return float(np.median(np.linalg.norm(align(V_fit[face], V_true[face]) - V_true[face], axis=1)))


def _rotation_error_deg(R1, R2):
    return float(np.degrees(np.arccos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1, 1))))


class EosPeer:
    """eos (eos-py) fitted on the same landmarks: an eos model built from the same ICT arrays (face
    area, identity PCA + 53 blendshapes), landmarks mapped to the vertex nearest to our embedding of
    each non-contour MediaPipe point, eos's defaults otherwise (scaled-orthographic camera)."""

    def __init__(self, model, emb):
        import eos

        self.eos = eos
        F, old = _face_submesh(model)
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
        from scipy.spatial import cKDTree

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


def _face_submesh(model):
    from .mesh import submesh

    mask = np.zeros(model.n_vertices, bool)
    mask[model.regions["face"]] = True
    return submesh(model.faces, mask)


def coarse(name="ict", n_identities=6, seed=SYNTH_SEED, with_eos=True, image_size=640, focal_px=1000.0, log=print):
    """Synthetic ground-truth benchmark of the coarse fit (and eos on the same detected landmarks).

    Random identities (N(0, 1)) with sparse random expressions (3 blendshapes in [0, 0.5]) rendered at
    yaw -60..60 (step 30) x pitch -20/0/20 with random light and skin tone; MediaPipe detects the
    landmarks; each fit is scored by the face-area vertex error after similarity alignment (mm), the
    rotation error (degrees) and the landmark reprojection error (px). The mean face is the baseline.
    """
    from . import landmarks as lmk
    from . import store
    from .camera import look_at_face
    from .coarse import fit_landmarks, landmark_basis
    from .embedding import load_embedding, render_albedo
    from .errors import NoFaceError
    from .render import get_renderer

    model = store.load_model(name)
    emb = load_embedding(model)
    landmark_basis(model, emb)
    rng = np.random.default_rng(seed)
    albedo0 = render_albedo(model)
    F = model.faces_in("render")
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
                row["mean_face_mm"] = _face_error(model, model.mean, V)
                for tag, f in (("ours_known_f", focal_px), ("ours", None)):
                    fit = fit_landmarks(model, emb, [pts], [(image_size, image_size)], focal=f)
                    im = fit.images[0]
                    row[f"{tag}_ms"] = 1e3 * fit.seconds
                    row[f"{tag}_mm"] = _face_error(model, model.shape(fit.identity, im.expression), V)
                    row[f"{tag}_rot_deg"] = _rotation_error_deg(im.camera.R, cam.R)
                    row[f"{tag}_px"] = im.error_px
                if peer is not None:
                    t0 = time.perf_counter()
                    Ve, proj, R_gl, _, _ = peer.fit(pts, image_size, image_size)
                    row["eos_ms"] = 1e3 * (time.perf_counter() - t0)
                    Vfull = V.copy()
                    Vfull[peer.face] = Ve
                    row["eos_mm"] = _face_error(model, Vfull, V)
                    row["eos_rot_deg"] = _rotation_error_deg(np.diag([1.0, -1.0, -1.0]) @ R_gl, cam.R)
                    row["eos_px"] = float(np.median(np.linalg.norm(proj - pts[peer.ids], axis=1)))
                rows.append(row)
        if views:  # all views of this identity in one solve: one identity, per-view pose and expression
            fit = fit_landmarks(model, emb, views, [(image_size, image_size)] * len(views), focal=None)
            joint.append({"views": len(views), "mm": _face_error(model, model.shape(fit.identity), model.shape(alpha)),
                          "mean_face_mm": _face_error(model, model.mean, model.shape(alpha)),
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


# --- real scans rendered Florence-style ----------------------------------------------------------
SCANS = (  # (folder, mesh, texture or None, whether its units are arbitrary)
    ("scan-meshmonk", "DemoFace_10K.obj", None, False),
    ("scan-fran", "fran_cut.vtk", "fran_cut.png", False),
    ("scan-leeperrysmith", "LeePerrySmith.glb", None, True),
)
FLORENCE_YAWS = tuple(range(-90, 91, 15))
FLORENCE_PITCHES = (-20, 0, 20)
ADULT_OUTER_IOD_MM = 90.0  # used only to scale a scan given in arbitrary units


def load_gt_scan(data_dir, folder, mesh, texture, arbitrary_units):
    """A scan in mm with its face frame; arbitrary-unit scans are scaled to a 90 mm outer interocular
    distance (measured on the scan through the detector)."""
    from . import landmarks as lmk
    from .scan import find_face_frame, read_scan, texture_colors

    scan = read_scan(data_dir / folder / mesh)
    if texture:
        scan.colors = texture_colors(scan, data_dir / folder / texture)
    frame = find_face_frame(scan)
    if arbitrary_units:
        p68 = lmk.to_68(np.nan_to_num(frame.landmarks))
        k = ADULT_OUTER_IOD_MM / np.linalg.norm(p68[36] - p68[45])
        scan.V = scan.V * k
        frame = find_face_frame(scan)
    return scan, frame


def ground_truth_scans(data_dir, log=print):
    """(folder, scan, frame) for each scan of SCANS found under data_dir (the others are reported)."""
    from pathlib import Path

    data_dir = Path(data_dir)
    for folder, mesh, texture, arbitrary in SCANS:
        if not (data_dir / folder / mesh).is_file():
            log(f"skipping {folder}: not found")
            continue
        scan, frame = load_gt_scan(data_dir, folder, mesh, texture, arbitrary)
        yield folder, scan, frame


def _five_points(p68):
    """Right eye, left eye, nose tip, right and left mouth corner from iBUG-68 points."""
    return np.stack([p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48], p68[54]])


def scan_render(scan, frame, colors, yaw, pitch, rng, image_size, focal_px, distance_mm=650.0):
    """One Florence-style render of a ground-truth scan: (camera, uint8 image) seen at yaw/pitch (degrees)
    from `distance_mm` in front of its nose tip, random light and background from `rng`."""
    from .camera import MODEL_TO_OPENCV, Camera, intrinsics, rotation_matrix
    from .render import get_renderer

    Rm = MODEL_TO_OPENCV @ rotation_matrix(yaw, pitch) @ frame.R  # scan -> face frame -> camera
    cam = Camera(intrinsics(focal_px, image_size, image_size), Rm,
                 np.array([0, 0, distance_mm]) - Rm @ frame.nose_tip, image_size, image_size)
    light = (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.2), -1.0)
    img = get_renderer().render(scan.V, scan.F, cam, vertex_colors=colors, light_dir=light,
                                background=tuple(rng.uniform(0.1, 0.6, 3))).color_uint8()
    return cam, img


def scans(name="ict", data_dir=None, with_eos=True, image_size=640, focal_px=1000.0, seed=0, log=print):
    """Fit renders of real scans (yaw -90..90 step 15 x pitch -20/0/20, random light, 640², f = 1000 px,
    650 mm) and score each fit by the MICC protocol against the scan; the mean face and eos (on the same
    landmarks) are scored the same way."""
    from pathlib import Path

    from . import landmarks as lmk
    from . import store
    from .coarse import fit_landmarks
    from .embedding import load_embedding
    from .errors import NoFaceError
    from .evaluate import micc_error
    from .medium import deform_redetected, deform_to_landmarks
    from .render import get_renderer
    from .scan import render_colors

    data_dir = Path(data_dir)
    model = store.load_model(name)
    emb = load_embedding(model)
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    mask = model.region_mask("outer_skin")
    peer = EosPeer(model, emb) if with_eos else None
    rng = np.random.default_rng(seed)
    results = {}
    for folder, scan, frame in ground_truth_scans(data_dir, log):
        gt_pts = _five_points(lmk.to_68(np.nan_to_num(frame.landmarks)))
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
                fit = fit_landmarks(model, emb, [pts], [(image_size, image_size)], focal=focal_px)
                im = fit.images[0]
                V = model.shape(fit.identity, im.expression)
                depth = get_renderer().render(V, model.faces_in("render"), im.camera).depth
                Vm = deform_to_landmarks(model, emb, V, im.camera, pts, depth).vertices
                Vr = deform_redetected(model, emb, V, im.camera, pts, depth).vertices
                for tag, Vr in (("ours", V), ("ours_medium", Vm), ("ours_medium_redetected", Vr),
                                ("mean_face", model.mean)):
                    e = micc_error(Vr, model.faces, scan.V, scan.F, frame.nose_tip, Vr[ref[30]],
                                   _five_points(Vr[ref]), gt_pts, recon_mask=mask)
                    row[f"{tag}_mm"] = e["mean_mm"]
                    row[f"{tag}_rmse_mm"] = e["rmse_mm"]
                if peer is not None:
                    Ve = peer.fit(pts, image_size, image_size)[0]
                    Vfull = model.mean.copy()
                    Vfull[peer.face] = Ve
                    fmask = np.zeros(model.n_vertices, bool)
                    fmask[peer.face] = True
                    e = micc_error(Vfull, model.faces, scan.V, scan.F, frame.nose_tip, Vfull[ref[30]],
                                   _five_points(Vfull[ref]), gt_pts, recon_mask=fmask & mask)
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


# --- medium stage -----------------------------------------------------------------------------------
def smooth_displacement(V, face, rng, n_bumps=8, sigma_mm=20.0, amplitude_mm=3.0):
    """(N, 3) a smooth random displacement field: Gaussian bumps (σ = sigma_mm) centred on random face
    vertices, each with a random 3D amplitude ~ N(0, amplitude_mm²) per axis. Adding it to a model
    shape gives a face outside the model's span."""
    C = V[face][rng.choice(len(face), n_bumps, replace=False)]
    A = rng.normal(0.0, amplitude_mm, (n_bumps, 3))
    d2 = ((V[:, None, :] - C[None]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma_mm ** 2)) @ A


def medium_speed(name="ict", repeats=30, log=print):
    """Factorisation and per-photo solve of the medium stage's face-area system (yaw bin 0°), against
    scipy's spsolve and libigl's min_quad_with_fixed on the same matrix and right-hand side."""
    import scipy.sparse.linalg as sla

    from . import store
    from .embedding import load_embedding
    from .medium import LaplacianDeformer

    model = store.load_model(name)
    emb = load_embedding(model)
    t0 = time.perf_counter()
    d = LaplacianDeformer(model, emb)  # includes CHOLMOD's symbolic analysis
    build_s = time.perf_counter() - t0
    b = d.yaw_bin(0.0)
    a = d.bin_active[b]
    rng = np.random.default_rng(0)
    targets = rng.normal(0.0, 1.0, (478, 3))
    t0 = time.perf_counter()
    d.solve(b, targets)  # first photo of the bin: numeric factorisation (reusing the analysis) + solve
    first_s = time.perf_counter() - t0
    solve_s = _timeit(lambda: d.solve(b, rng.normal(0.0, 1.0, (478, 3))), repeats)[0]
    A = d.system_matrix(b).tocsc()
    rhs = np.zeros((len(d.domain), 3))
    np.add.at(rhs, d.bin_vertices[b][a], d.weights[a, None] * targets[a])
    D = d.solve(b, targets)[0]
    spsolve_s = _timeit(lambda: sla.spsolve(A, rhs), max(3, repeats // 10))[0]
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
    import scipy.sparse as sp

    A2 = sp.csc_matrix(2.0 * A)  # libigl minimises ½ zᵀ A z + zᵀ B
    empty = np.zeros(0, np.int64)

    def igl_full():
        return igl.min_quad_with_fixed(A2, -2.0 * rhs, empty, np.zeros((0, 3)), sp.csc_matrix((0, A.shape[0])),
                                       np.zeros((0, 3)), True)

    data = igl.min_quad_with_fixed_data()
    t0 = time.perf_counter()
    igl.min_quad_with_fixed_precompute(A2, empty, sp.csc_matrix((0, A.shape[0])), True, data)
    igl_pre_s = time.perf_counter() - t0
    igl_solve_s = _timeit(lambda: igl.min_quad_with_fixed_solve(data, -2.0 * rhs, np.zeros((0, 3)),
                                                                np.zeros((0, 3))), repeats)[0]
    Z = igl.min_quad_with_fixed_solve(data, -2.0 * rhs, np.zeros((0, 3)), np.zeros((0, 3)))
    out.update(libigl_precompute_ms=round(1e3 * igl_pre_s, 1), libigl_solve_ms=round(1e3 * igl_solve_s, 3),
               libigl_full_ms=round(1e3 * _timeit(igl_full, max(3, repeats // 10))[0], 1),
               ratio_libigl_solve_over_solve=round(igl_solve_s / solve_s, 2),
               max_abs_diff_vs_libigl_mm=float(np.abs(np.asarray(Z) - D).max()))
    return out


def medium_synthetic(name="ict", n_identities=6, seed=SYNTH_SEED + 1, image_size=640, focal_px=1000.0, log=print):
    """Out-of-span synthetic faces (a random ICT identity + `smooth_displacement`), rendered at yaw
    -60..60 (step 30), random pitch in ±15 and light: coarse vs coarse+medium, face-area vertex error
    after similarity alignment and MICC-protocol error against the true mesh. Also reports, per landmark
    region, how the detected residual after the coarse fit relates to the true one (correlation and
    least-squares gain: the evidence TARGET_GAIN in fitter.medium is set from)."""
    from . import landmarks as lmk
    from . import store
    from .camera import look_at_face
    from .coarse import fit_landmarks
    from .embedding import load_embedding, render_albedo
    from .errors import NoFaceError
    from .detector_bias import detect_on_fit
    from .evaluate import micc_error
    from .medium import deform_redetected, deform_to_landmarks
    from .render import get_renderer

    model = store.load_model(name)
    emb = load_embedding(model)
    rng = np.random.default_rng(seed)
    albedo = render_albedo(model)
    F = model.faces_in("render")
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
            fit = fit_landmarks(model, emb, [pts], [(image_size, image_size)])
            im = fit.images[0]
            Vc = model.shape(fit.identity, im.expression)
            depth = get_renderer().render(Vc, F, im.camera).depth
            try:
                on_fit = detect_on_fit(model, Vc, im.camera, im.fitted_2d)
            except NoFaceError:
                on_fit = None
            mr = deform_to_landmarks(model, emb, Vc, im.camera, pts, depth)
            redet = deform_redetected(model, emb, Vc, im.camera, pts, depth, on_fit=on_fit)
            truth = cam.project(emb.points(V, model.faces, yaw))
            for g, idx in groups.items():
                evidence[g].append(np.stack([truth[idx] - im.fitted_2d[idx], pts[idx] - im.fitted_2d[idx],
                                             pts[idx] - (im.fitted_2d if on_fit is None else on_fit)[idx]]))
            row = {"yaw": yaw, "detected": True, "medium_ms": 1e3 * mr.seconds, "redetected": redet.residual == "on_fit",
                   "medium_redetected_ms": 1e3 * redet.seconds}
            nose = V[ref[30]]
            for tag, Vr in (("coarse", Vc), ("medium", mr.vertices), ("medium_redetected", redet.vertices)):
                row[f"{tag}_mm"] = _face_error(model, Vr, V)
                row[f"{tag}_micc_mm"] = micc_error(Vr, model.faces, V, F_skin, nose, Vr[ref[30]],
                                                   _five_points(Vr[ref]), _five_points(V[ref]),
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


# --- RGB-D registration ---------------------------------------------------------------------------------
def synthetic_rgbd(model, rng, width=640, height=480, focal_px=570.0, yaw=0.0, occluders=True,
                   depth_noise_mm=0.8, holes=6, flying=True):
    """A synthetic RGB-D capture of a random ICT face (identity N(0,1), a few expressions) with
    sensor-like depth (Gaussian noise growing with depth², random holes, flying pixels at depth edges)
    and, optionally, occluders: a hair band across the forehead and brows, and a hand patch on one
    cheek (both in colour and depth). Returns a dict: color, depth, K, V (ground-truth mesh, camera
    frame), occluded (N,) bool (vertices behind an occluder), brows (N,) bool."""
    import cv2

    from .camera import look_at_face
    from .embedding import render_albedo
    from .render import get_renderer

    alpha = rng.standard_normal(model.n_identity)
    beta = np.zeros(model.n_expression)
    beta[rng.choice(model.n_expression, 3, replace=False)] = rng.uniform(0, 0.4, 3)
    Vm = model.shape(alpha, beta)
    face = model.regions["face"]
    cam = look_at_face(Vm[face].mean(0), yaw, rng.uniform(-8, 8), rng.uniform(550, 750), focal_px, width, height)
    cam.K[0, 2] += rng.uniform(-8, 8)  # a real sensor's principal point is off-centre
    cam.K[1, 2] += rng.uniform(-8, 8)
    V = cam.to_camera(Vm)
    from .camera import Camera

    cam_id = Camera(cam.K, np.eye(3), np.zeros(3), width, height)
    F = model.faces_in("render")
    albedo = np.clip(render_albedo(model) * rng.uniform(0.8, 1.1), 0, 1)
    light = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.1), -1.0)
    res = get_renderer().render(V, F, cam_id, vertex_colors=albedo, light_dir=light, background=(0.3, 0.3, 0.32))
    color = res.color_uint8()
    depth = res.depth.astype(np.float32).copy()
    # background wall 400 mm behind the face (a sensor sees something there)
    wall = np.median(depth[depth > 0]) + 400.0
    depth[depth == 0] = wall
    occ = np.zeros((height, width), bool)
    uv = cam_id.project(V)
    brow_ids = [np.asarray(model.metadata["reference_landmarks_68"])[17:27]]
    brows = np.zeros(model.n_vertices, bool)
    from .embedding import painted_parts

    brows[face] = painted_parts(model)[face] == 1
    if occluders:
        # hair band: a dark strip across the forehead down to just above the brows, 15 mm in front
        bu = uv[brows]
        top, bottom = bu[:, 1].min() - 0.9 * np.ptp(bu[:, 1]) - 20, bu[:, 1].min() - 2
        band = np.zeros_like(occ)
        band[int(max(top, 0)):int(max(bottom, 0)), :] = True
        band &= res.mask
        depth[band] -= 15.0
        color[band] = (np.array([70, 45, 30]) + rng.integers(-10, 10, 3)).clip(0, 255)
        # a hand on one cheek (in its own shadow: darker than the lit face), 25 mm in front
        L68 = uv[np.asarray(model.metadata["reference_landmarks_68"])]
        iod = np.linalg.norm(L68[36] - L68[45])
        cheek = L68[3 if rng.random() < 0.5 else 13]
        hand = np.zeros((height, width), np.uint8)
        cv2.ellipse(hand, (int(cheek[0]), int(cheek[1])), (int(0.3 * iod), int(0.4 * iod)), 20, 0, 360, 1, -1)
        hand = hand.astype(bool)
        depth[hand] = np.minimum(depth[hand], np.median(depth[hand & res.mask]) - 25.0)
        color[hand] = (np.array([150, 100, 80]) + rng.integers(-15, 15, 3)).clip(0, 255)
        occ = band | hand
    # sensor noise: Gaussian growing with depth², holes, flying pixels at discontinuities
    z0 = np.median(depth[res.mask])
    depth += rng.normal(0, depth_noise_mm, depth.shape).astype(np.float32) * (depth / z0) ** 2
    for _ in range(holes):
        c = (int(rng.uniform(0.25, 0.75) * width), int(rng.uniform(0.2, 0.8) * height))
        m = np.zeros((height, width), np.uint8)
        cv2.circle(m, c, int(rng.uniform(4, 14)), 1, -1)
        depth[m.astype(bool)] = 0
    if flying:
        gy, gx = np.gradient(depth)
        edge = (np.hypot(gx, gy) > 20) & (depth > 0)
        t = rng.uniform(0, 1, edge.sum()).astype(np.float32)
        depth[edge] = depth[edge] * (1 - 0.5 * t) + wall * 0.5 * t
    depth[depth < 0] = 0
    vis = res.mask
    vz = V[:, 2]
    px = np.clip(np.rint(uv).astype(int), [0, 0], [width - 1, height - 1])
    seen = vis[px[:, 1], px[:, 0]] & (np.abs(res.depth[px[:, 1], px[:, 0]] - vz) < 2.0)
    occluded = seen & occ[px[:, 1], px[:, 0]]
    return {"color": color, "depth": depth, "K": cam.K.copy(), "V": V, "occluded": occluded, "brows": brows,
            "visible": seen, "brow_ids": brow_ids}


def _region_errors(model, cap, V):
    """Median correspondence error (mm) on the visible brows, the occluded vertices and the rest of the
    visible face area of a synthetic capture."""
    e = np.linalg.norm(V - cap["V"], axis=1)
    face = np.zeros(model.n_vertices, bool)
    face[model.regions["face"]] = True
    vis, occ = cap["visible"] & face, cap["occluded"] & face
    brows = cap["brows"] & vis & ~occ
    rest = vis & ~occ & ~cap["brows"]
    return {"brows_mm": float(np.median(e[brows])), "occluded_mm": float(np.median(e[occ])) if occ.any() else None,
            "rest_mm": float(np.median(e[rest]))}


def register_synthetic(name="ict", n_captures=8, seed=SYNTH_SEED + 2, schedule="fast", log=print):
    """Synthetic RGB-D captures (`synthetic_rgbd`: noise, holes, flying pixels, hair band, hand):
    geometry-only NICP vs T-ICP, median correspondence error per region, and time."""
    from . import store
    from .nicp import SCHEDULES
    from .register import register_rgbd

    settings = SCHEDULES[schedule]
    model = store.load_model(name)
    rng = np.random.default_rng(seed)
    caps = [synthetic_rgbd(model, rng, yaw=float(rng.uniform(-25, 25))) for _ in range(n_captures)]
    register_rgbd(model, caps[0]["color"], caps[0]["depth"], caps[0]["K"])  # warm-up: model preparation
    rows = []
    for i, cap in enumerate(caps):
        row = {}
        for tag, use_color in (("nicp_geometry", False), ("ticp", True)):
            t0 = time.perf_counter()
            reg = register_rgbd(model, cap["color"], cap["depth"], cap["K"], settings, use_color=use_color)
            row[tag] = dict(_region_errors(model, cap, reg.vertices), seconds=time.perf_counter() - t0,
                            target_points=reg.report["target_points"], iterations=reg.report["iterations"])
        row["coarse"] = _region_errors(model, cap, reg.coarse_vertices)  # the start of both
        rows.append(row)
        log(f"capture {i + 1}/{n_captures}: {row}")
    out = {"captures": n_captures}
    for tag in ("coarse", "nicp_geometry", "ticp"):
        out[tag] = {k: round(float(np.mean([r[tag][k] for r in rows if r[tag].get(k) is not None])), 3)
                    for k in rows[0][tag]}
    return out


def _trimesh_peer(V0_face, F_face, target_points, landmarks):
    """trimesh.registration.nricp_amberg with its default schedule, same start, target and landmarks."""
    import trimesh
    from trimesh.registration import nricp_amberg

    src = trimesh.Trimesh(V0_face, F_face, process=False)
    lv, lt = landmarks
    t0 = time.perf_counter()
    V = nricp_amberg(src, trimesh.PointCloud(target_points), source_landmarks=np.asarray(lv),
                     target_positions=np.asarray(lt), use_faces=False)
    return np.asarray(V), time.perf_counter() - t0


def register_scans(name="ict", data_dir=None, with_trimesh=True, n_points=100_000, seed=0, schedule="fast",
                   log=print):
    """Register the template to each scan (`register_scan`, `n_points` surface samples; textured scans
    with the colour term) and to a noisy depth map rendered from it; report the scan-to-registration
    surface distance (scan vertices within 95 mm of the nose tip to the registered face area) and the
    time; trimesh's nricp_amberg on the same start, samples and landmarks, in the same run."""
    from pathlib import Path

    from . import store
    from .camera import MODEL_TO_OPENCV, Camera, intrinsics
    from .nicp import SCHEDULES
    from .register import register_rgbd, register_scan, scan_distances
    from .render import get_renderer
    from .scan import render_colors

    settings = SCHEDULES[schedule]
    data_dir = Path(data_dir)
    model = store.load_model(name)
    rng = np.random.default_rng(seed)
    results = {}
    for folder, scan, frame in ground_truth_scans(data_dir, log):
        register_scan(model, scan, settings, n_points=n_points, seed=seed)  # warm-up (detector, model)
        t0 = time.perf_counter()
        reg, cam = register_scan(model, scan, settings, n_points=n_points, seed=seed)
        t_scan = time.perf_counter() - t0
        d, cover = scan_distances(reg.vertices, model, scan.V, scan.F, frame.nose_tip)
        res = {"scan_points_scored": int(len(d)), "covered_fraction": round(cover, 3), "texture_constraint": reg.report["texture_constraint"],
               "scan_median_mm": round(float(np.median(d)), 3), "scan_p90_mm": round(float(np.percentile(d, 90)), 3),
               "scan_p95_mm": round(float(np.percentile(d, 95)), 3),
               "scan_seconds": round(t_scan, 3), "nicp_seconds": reg.report["times_s"]["nicp_s"],
               "target_points": reg.report["target_points"]}
        d0, _ = scan_distances(reg.coarse_vertices, model, scan.V, scan.F, frame.nose_tip)
        res["coarse_median_mm"] = round(float(np.median(d0)), 3)
        if with_trimesh:
            from .embedding import load_embedding
            from .medium import laplacian_deformer

            deformer = laplacian_deformer(model, load_embedding(model))
            dom, Fd = deformer.domain, deformer.F_local
            V0c = cam.to_camera(reg.coarse_vertices)[dom]
            Vt, t_peer = _trimesh_peer(V0c, Fd, reg.target.points, reg.landmarks)
            Vfull = cam.to_camera(reg.coarse_vertices)
            Vfull[dom] = Vt
            dp, _ = scan_distances((Vfull - cam.t) @ cam.R, model, scan.V, scan.F, frame.nose_tip)
            res.update(trimesh_median_mm=round(float(np.median(dp)), 3),
                       trimesh_p90_mm=round(float(np.percentile(dp, 90)), 3),
                       trimesh_p95_mm=round(float(np.percentile(dp, 95)), 3), trimesh_seconds=round(t_peer, 3),
                       ratio_trimesh_over_ours_time=round(t_peer / reg.report["times_s"]["nicp_s"], 1))
        # depth rendered from the scan (the same virtual camera), with sensor noise: RGB-D path
        colors = render_colors(scan)
        R = MODEL_TO_OPENCV @ frame.R
        cam = Camera(intrinsics(1000.0, 640, 640), R, np.array([0, 0, 650.0]) - R @ frame.nose_tip, 640, 640)
        cam_id = Camera(cam.K, np.eye(3), np.zeros(3), 640, 640)
        Vc = cam.to_camera(scan.V)
        r = get_renderer().render(Vc, scan.F, cam_id, vertex_colors=colors, light_dir=(0.2, -0.3, -1.0),
                                  background=(0.3, 0.3, 0.32))
        depth = r.depth.astype(np.float32)
        depth[depth > 0] += rng.normal(0, 0.5, int((depth > 0).sum())).astype(np.float32)
        t0 = time.perf_counter()
        reg2 = register_rgbd(model, r.color_uint8(), depth, cam.K, settings, use_color=scan.colors is not None)
        t_depth = time.perf_counter() - t0
        d2, _ = scan_distances((reg2.vertices - cam.t) @ cam.R, model, scan.V, scan.F, frame.nose_tip)
        res.update(depth_median_mm=round(float(np.median(d2)), 3), depth_p90_mm=round(float(np.percentile(d2, 90)), 3),
                   depth_p95_mm=round(float(np.percentile(d2, 95)), 3),
                   depth_seconds=round(t_depth, 3), depth_target_points=reg2.report["target_points"])
        results[folder] = res
        log(f"{folder}: {res}")
    return results


# --- fine stage (shape from shading) --------------------------------------------------------------------
def wrinkle_field(points, rng, wavelengths_mm=(4.0, 9.0), rms_mm=0.15, components=24):
    """(N,) band-limited height field (mm) at 3D points: a sum of random plane waves with wavelengths in
    the given band and random directions and phases, scaled to the given RMS."""
    k = rng.normal(size=(components, 3))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    k *= (2 * np.pi / rng.uniform(*wavelengths_mm, size=components))[:, None]
    h = np.cos(points @ k.T + rng.uniform(0, 2 * np.pi, components)).sum(1)
    return h * (rms_mm / max(float(np.sqrt(np.mean(h * h))), 1e-12))


def detailed_face(model, rng, levels=2, rms_mm=0.15):
    """A random ICT face (identity N(0, 1), a few expressions ≤ 0.4) whose refined region is subdivided
    `levels` times and displaced along its normals by `wrinkle_field` (faded to zero over 8 mm at the
    region's border). Returns (V_base (N, 3) the model shape, V (M, 3) with detail, F (T, 3), albedo
    (M, 3), V_smooth (M, 3) the subdivided shape without the detail)."""
    from .embedding import render_albedo
    from .fine import refined_region
    from .mesh import boundary_vertices, subdivide_midpoint, vertex_normals

    b = np.zeros(model.n_expression)
    b[rng.choice(model.n_expression, 3, replace=False)] = rng.uniform(0, 0.4, 3)
    V0 = model.shape(rng.standard_normal(model.n_identity), b)
    F = model.faces_in("render")
    region = model.region_mask(refined_region(model))
    inner = region[F].all(1)
    Fi, Fo = F[inner], F[~inner]
    albedo = render_albedo(model)
    V, Fs, A = V0, Fi, albedo
    inside = region.astype(float)
    for _ in range(levels):
        V, Fs, extra = subdivide_midpoint(V, Fs, np.column_stack([A, inside]))
        A, inside = extra[:, :3], extra[:, 3]
    F_all = np.concatenate([Fs, Fo])
    border = boundary_vertices(Fi, model.n_vertices)
    border = border[np.isin(border, np.flatnonzero(region))]
    from scipy.spatial import cKDTree

    dist = cKDTree(V0[border]).query(V)[0] if len(border) else np.full(len(V), np.inf)
    fade = np.clip(dist / 8.0, 0, 1) * (inside > 0.999)
    h = wrinkle_field(V, rng, rms_mm=rms_mm) * fade
    n = vertex_normals(V, F_all)
    return V0, V + h[:, None] * n, F_all, A, V


def sh_render(V, F, camera, albedo, sh, specular=0.0, shininess=40.0, background=(0.3, 0.3, 0.3)):
    """uint8 image of the mesh under SH lighting (9, 3) with per-vertex albedo, plus an optional white
    Blinn-Phong highlight (light along the SH's linear direction), and the render result."""
    from .render import get_renderer
    from .texture import sh_basis

    res = get_renderer().render(V, F, camera, vertex_colors=albedo, ambient=1.0, diffuse=0.0)
    m = res.mask
    n = res.normal[m].astype(float)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    col = res.color[m] * np.clip(sh_basis(n) @ sh, 0, None)
    if specular > 0:
        l = sh[[3, 1, 2]].mean(1)  # SH order-1 coefficients (y, z, x) -> direction (x, y, z)
        l = l / max(np.linalg.norm(l), 1e-12)
        P = res.surface_points(V, F)[m] @ camera.R.T + camera.t
        v = -P / np.linalg.norm(P, axis=1, keepdims=True)
        hv = (l + v) / np.linalg.norm(l + v, axis=1, keepdims=True)
        col = col + specular * np.clip((n * hv).sum(1), 0, None)[:, None] ** shininess
    img = np.empty(res.color.shape)
    img[:] = background
    img[m] = col
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), res


def random_sh(rng, strength=0.5):
    """(9, 3) plausible SH lighting: a constant term, a random first-order direction towards the camera
    side, small second-order terms; grey light with a slight tint."""
    L = np.zeros((9, 3))
    d = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.2), -1.0])
    d /= np.linalg.norm(d)
    base = np.array([0.95, 0.95, 0.95]) * rng.uniform(0.9, 1.1, 3)
    L[0] = 0.75 * base
    L[1], L[2], L[3] = strength * d[1] * base, strength * d[2] * base, strength * d[0] * base
    L[4:] = rng.normal(0, 0.03, (5, 1)) * base
    return L


def _normal_angles_deg(n1, n2):
    return np.degrees(np.arccos(np.clip((n1 * n2).sum(-1), -1.0, 1.0)))


def fine_case_errors(fine_result, V_true, F_true, R_true, t_true, V_smooth=None):
    """Depth and normal errors of the medium (d₀) and fine depth maps of a FineResult against the true
    mesh rendered into the same crop pixels, over the pixels the stage solved that are skin in both.
    With V_smooth (the true mesh without its fine detail), also how much of the detail the stage
    recovered: the wrinkle-scale true detail δ* = high-pass(depth(V_true) − depth(V_smooth)) against the
    wrinkle-scale change δ = high-pass(fine − medium): their correlation and rms(δ − δ*) / rms(δ*) (1 for
    the medium result, which has no detail); and the normal error that d₀ plus the whole true detail
    would have (a perfect detail recovery on the medium shape) and that of the smooth truth."""
    from .camera import Camera
    from .fine import depth_normals
    from .render import get_renderer

    cam = Camera(fine_result.camera.K, R_true, t_true, fine_result.camera.width, fine_result.camera.height)
    gt = get_renderer().render(V_true, F_true, cam).depth.astype(float)
    m = fine_result.unknown & fine_result.skin & (gt > 0)
    if V_smooth is not None:
        smooth = get_renderer().render(V_smooth, F_true, cam).depth.astype(float)
        m &= smooth > 0
    n_gt = depth_normals(gt, cam.K)
    out = {"pixels": int(m.sum())}
    for tag, d in (("medium", fine_result.depth0), ("fine", fine_result.depth)):
        n = depth_normals(d, cam.K)
        diff = (d - gt)[m]
        out[f"{tag}_depth_mm"] = float(np.mean(np.abs(diff - np.median(diff))))
        out[f"{tag}_normal_deg"] = float(np.mean(_normal_angles_deg(n[m], n_gt[m])))
    if V_smooth is not None:
        # both sides through the same high-pass (σ = 3 px), over the same pixels: the stage's change also
        # holds corrections of the medium shape, which are not detail
        true_detail = _high_pass(np.where(m, gt - smooth, 0.0), m)[m]
        change = _high_pass(np.where(m, fine_result.depth - fine_result.depth0, 0.0), m)[m]
        rms = float(np.sqrt(np.mean(true_detail ** 2)))
        out["true_detail_rms_mm"] = rms
        out["detail_correlation"] = float(np.corrcoef(change, true_detail)[0, 1])
        out["detail_relative_error"] = float(np.sqrt(np.mean((change - true_detail) ** 2)) / max(rms, 1e-9))
        # what a perfect detail recovery on the medium shape would reach: d₀ plus the true detail (the rest
        # of the error is the medium shape's own, which the d₀ prior keeps)
        perfect = np.where(m, fine_result.depth0 + (gt - smooth), fine_result.depth0)
        for tag, d in (("perfect_detail", perfect), ("smooth_truth", smooth)):
            out[f"{tag}_normal_deg"] = float(np.mean(_normal_angles_deg(depth_normals(d, cam.K)[m], n_gt[m])))
    return out


def _high_pass(depth, mask, sigma_px=3.0):
    """Depth minus its Gaussian low-pass (normalised inside the mask): the wrinkle-scale detail."""
    from scipy.ndimage import gaussian_filter

    w = gaussian_filter(mask.astype(float), sigma_px)
    low = gaussian_filter(np.where(mask, depth, 0.0), sigma_px) / np.maximum(w, 1e-6)
    return np.where(mask, depth - low, 0.0)


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


def _fine_from_true_base(model, V_base, camera, image, face, config, V_true, F_true, V_smooth):
    """The fine stage started from the true shape without detail (model topology) and the true camera,
    scored like the pipeline's result; fields prefixed `true_base_`."""
    from .fine import refine_depth
    from .segment import parse_face, person_mask

    labels = parse_face(image, face, person_mask(image))
    f = refine_depth(model, V_base, camera, image, labels, config)
    e = fine_case_errors(f, V_true, F_true, camera.R, camera.t, V_smooth)
    keep = ("medium_normal_deg", "fine_normal_deg", "medium_depth_mm", "fine_depth_mm", "detail_correlation",
            "detail_relative_error")
    return {"true_base_" + k.replace("medium_", "base_"): e[k] for k in keep}


def fine_scans(name="ict", data_dir=None, image_size=640, focal_px=1000.0, yaws=(-45, -30, -15, 0, 15, 30, 45),
               seed=0, config=None, log=print):
    """MICC-protocol error of medium vs fine on renders of the real scans (as `scans`, pitch 0, the yaws
    given), through the photo pipeline with the focal length given."""
    from pathlib import Path

    from . import landmarks as lmk
    from . import store
    from .errors import NoFaceError
    from .evaluate import micc_error
    from .pipeline import fit_photo
    from .scan import render_colors

    model = store.load_model(name)
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    mask = model.region_mask("outer_skin")
    rng = np.random.default_rng(seed)
    results = {}
    for folder, scan, frame in ground_truth_scans(Path(data_dir), log):
        gt_pts = _five_points(lmk.to_68(np.nan_to_num(frame.landmarks)))
        colors = render_colors(scan)
        rows = []
        for yaw in yaws:
            cam, img = scan_render(scan, frame, colors, yaw, 0.0, rng, image_size, focal_px)
            try:
                r = fit_photo(f"{folder}_{yaw}.png", model, ("coarse", "medium", "fine"), focal=focal_px, image=img,
                              texture_size=256, fine_config=config)[0]
            except NoFaceError:
                rows.append({"yaw": yaw, "detected": False})
                continue
            row = {"yaw": yaw, "detected": True, "fine": r.fine is not None}
            for tag, Vr in (("medium", r.medium.vertices), ("fine", r.vertices)):
                e = micc_error(Vr, model.faces, scan.V, scan.F, frame.nose_tip, Vr[ref[30]], _five_points(Vr[ref]),
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
    from . import store
    from .camera import look_at_face
    from .errors import NoFaceError
    from .pipeline import fit_photo

    model = store.load_model(name)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_faces):
        V0, V, F, A, V_smooth = detailed_face(model, rng)
        center = V[model.region("face")].mean(0)
        for yaw in yaws:
            for spec in specular:
                cam = look_at_face(center, yaw, rng.uniform(-10, 10), rng.uniform(550, 650), focal_px,
                                   image_size, image_size)
                img, _ = sh_render(V, F, cam, A * rng.uniform(0.85, 1.1), random_sh(rng), specular=spec)
                try:
                    r = fit_photo(f"synthetic_{k}_{yaw}.png", model, ("coarse", "medium", "fine"), focal=focal_px,
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
                    row.update(_fine_from_true_base(model, V0, cam, img, r.landmarks, config, V, F, V_smooth))
                rows.append(row)
                log(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows
