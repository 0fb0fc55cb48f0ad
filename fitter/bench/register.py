"""Registration benchmarks: geometry-only NICP vs T-ICP on synthetic RGB-D captures, the real scans
(and depth rendered from them), with trimesh's nricp_amberg as the peer."""
import time

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..geometry.camera import MODEL_TO_OPENCV, Camera, intrinsics
from ..prepared import PreparedModel
from ..registration.nicp import SCHEDULES
from ..registration.register import register_rgbd, register_scan, scan_distances
from ..registration.scan import render_scan

from .common import SYNTH_SEED, ground_truth_scans
from .synthetic import synthetic_rgbd


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
    settings = SCHEDULES[schedule]
    prepared = PreparedModel.load(name)
    model = prepared.model
    rng = np.random.default_rng(seed)
    caps = [synthetic_rgbd(prepared, rng, yaw=float(rng.uniform(-25, 25))) for _ in range(n_captures)]
    register_rgbd(prepared, caps[0]["color"], caps[0]["depth"], caps[0]["K"])  # warm-up: model preparation
    rows = []
    for i, cap in enumerate(caps):
        row = {}
        for tag, use_color in (("nicp_geometry", False), ("ticp", True)):
            t0 = time.perf_counter()
            reg = register_rgbd(prepared, cap["color"], cap["depth"], cap["K"], settings, use_color=use_color)
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


    settings = SCHEDULES[schedule]
    data_dir = Path(data_dir)
    prepared = PreparedModel.load(name)
    model = prepared.model
    rng = np.random.default_rng(seed)
    results = {}
    for folder, scan, frame in ground_truth_scans(data_dir, log):
        # the scan's face frame is known (ground_truth_scans found it): no search inside the timing
        register_scan(prepared, scan, settings, n_points=n_points, seed=seed, frame=frame)  # warm-up
        t0 = time.perf_counter()
        reg, cam = register_scan(prepared, scan, settings, n_points=n_points, seed=seed, frame=frame)
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
            area = prepared.face_area
            dom, Fd = area.domain, area.F_local
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
        R = MODEL_TO_OPENCV @ frame.R
        cam = Camera(intrinsics(1000.0, 640, 640), R, np.array([0, 0, 650.0]) - R @ frame.nose_tip, 640, 640)
        cam_id = Camera(cam.K, np.eye(3), np.zeros(3), 640, 640)
        Vc = cam.to_camera(scan.V)
        r = render_scan(replace(scan, V=Vc), cam_id)
        depth = r.depth.astype(np.float32)
        depth[depth > 0] += rng.normal(0, 0.5, int((depth > 0).sum())).astype(np.float32)
        t0 = time.perf_counter()
        reg2 = register_rgbd(prepared, r.color_uint8(), depth, cam.K, settings, use_color=scan.colors is not None)
        t_depth = time.perf_counter() - t0
        d2, _ = scan_distances((reg2.vertices - cam.t) @ cam.R, model, scan.V, scan.F, frame.nose_tip)
        res.update(depth_median_mm=round(float(np.median(d2)), 3), depth_p90_mm=round(float(np.percentile(d2, 90)), 3),
                   depth_p95_mm=round(float(np.percentile(d2, 95)), 3),
                   depth_seconds=round(t_depth, 3), depth_target_points=reg2.report["target_points"])
        results[folder] = res
        log(f"{folder}: {res}")
    return results
