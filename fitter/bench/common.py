"""What the benchmarks share: timing, synthetic-truth seeds and poses, error measures, the real scans
of ../shared/data (read, oriented, scaled) and their Florence-style renders, and a Dask cluster of
separate processes on this machine."""
import contextlib
import time

from pathlib import Path

import numpy as np

from ..detection import landmarks as lmk
from ..geometry.align import align
from ..geometry.camera import MODEL_TO_OPENCV, Camera, intrinsics, rotation_matrix
from ..geometry.mesh import submesh
from ..geometry.render import get_renderer
from ..registration.register import ADULT_OUTER_IOD_MM
from ..registration.scan import find_face_frame, read_scan, texture_colors


def timeit(fn, repeats):
    fn()  # warm-up (shader compile, buffer allocation)
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return float(np.median(t)), float(np.min(t))


# --- synthetic ground truth ---------------------------------------------------------------------
SYNTH_SEED = 777  # identities never used elsewhere (embedding: 0 and 1000; tests: < 100)
SYNTH_YAWS = (-60, -30, 0, 30, 60)
SYNTH_PITCHES = (-20, 0, 20)


def face_error(model, V_fit, V_true):
    """Median distance (mm) over the face area after similarity alignment of V_fit onto V_true."""
    face = model.regions["face"]
    return float(np.median(np.linalg.norm(align(V_fit[face], V_true[face]) - V_true[face], axis=1)))


def rotation_error_deg(R1, R2):
    return float(np.degrees(np.arccos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1, 1))))


def face_submesh(model):

    mask = np.zeros(model.n_vertices, bool)
    mask[model.regions["face"]] = True
    return submesh(model.faces, mask)


# --- real scans rendered Florence-style ----------------------------------------------------------
SCANS = (  # (folder, mesh, texture or None, whether its units are arbitrary)
    ("scan-meshmonk", "DemoFace_10K.obj", None, False),
    ("scan-fran", "fran_cut.vtk", "fran_cut.png", False),
    ("scan-leeperrysmith", "LeePerrySmith.glb", None, True),
)
FLORENCE_YAWS = tuple(range(-90, 91, 15))
FLORENCE_PITCHES = (-20, 0, 20)


def shared_scans(data_dir):
    """(name, {"scan": path, "texture": path or None}) of each scan of SCANS found under data_dir."""
    data_dir = Path(data_dir)
    for folder, mesh, texture, _ in SCANS:
        if (data_dir / folder / mesh).is_file():
            yield folder.removeprefix("scan-"), {"scan": str(data_dir / folder / mesh),
                                                 "texture": str(data_dir / folder / texture) if texture else None}


def load_gt_scan(data_dir, folder, mesh, texture, arbitrary_units):
    """A scan in mm with its face frame; arbitrary-unit scans are scaled to a 90 mm outer interocular
    distance (measured on the scan through the detector)."""
    scan = read_scan(data_dir / folder / mesh)
    if texture:
        scan.colors = texture_colors(scan, data_dir / folder / texture)
    frame = find_face_frame(scan)
    if arbitrary_units:
        k = ADULT_OUTER_IOD_MM / lmk.outer_interocular(np.nan_to_num(frame.landmarks))
        scan.V = scan.V * k
        frame = find_face_frame(scan)
    return scan, frame


def ground_truth_scans(data_dir, log=print):
    """(folder, scan, frame) for each scan of SCANS found under data_dir (the others are reported)."""
    data_dir = Path(data_dir)
    for folder, mesh, texture, arbitrary in SCANS:
        if not (data_dir / folder / mesh).is_file():
            log(f"skipping {folder}: not found")
            continue
        scan, frame = load_gt_scan(data_dir, folder, mesh, texture, arbitrary)
        yield folder, scan, frame


def scan_render(scan, frame, colors, yaw, pitch, rng, image_size, focal_px, distance_mm=650.0):
    """One Florence-style render of a ground-truth scan: (camera, uint8 image) seen at yaw/pitch (degrees)
    from `distance_mm` in front of its nose tip, random light and background from `rng`."""
    Rm = MODEL_TO_OPENCV @ rotation_matrix(yaw, pitch) @ frame.R  # scan -> face frame -> camera
    cam = Camera(intrinsics(focal_px, image_size, image_size), Rm,
                 np.array([0, 0, distance_mm]) - Rm @ frame.nose_tip, image_size, image_size)
    light = (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.2), -1.0)
    img = get_renderer().render(scan.V, scan.F, cam, vertex_colors=colors, light_dir=light,
                                background=tuple(rng.uniform(0.1, 0.6, 3))).color_uint8()
    return cam, img


# --- a Dask cluster of separate processes on this machine ------------------------------------------
@contextlib.contextmanager
def dask_processes(n_workers, folder, env=None):
    """Start `dask scheduler` and `n_workers` `dask worker --nthreads 1` processes on localhost (the
    commands beside this Python), wait for the workers, yield the scheduler's address; stop them after.
    folder: where the scheduler file and the log go; env: extra environment of the processes."""
    import json
    import os
    import subprocess
    import sys

    from distributed import Client

    dask_cli = Path(sys.executable).parent / "dask"
    if not dask_cli.exists():
        raise FileNotFoundError(f"the dask command is not installed beside {sys.executable}")
    folder = Path(folder)
    sched = folder / "scheduler.json"
    env = dict(os.environ, **(env or {}))
    with open(folder / "dask.log", "w") as logf:
        procs = [subprocess.Popen([str(dask_cli), "scheduler", "--scheduler-file", str(sched), "--port", "0",
                                   "--host", "127.0.0.1", "--no-dashboard"], stdout=logf, stderr=logf, env=env)]
        try:
            for _ in range(600):
                if sched.exists() and sched.stat().st_size:
                    break
                time.sleep(0.1)
            for _ in range(n_workers):
                procs.append(subprocess.Popen([str(dask_cli), "worker", "--scheduler-file", str(sched), "--nthreads",
                                               "1", "--no-dashboard", "--host", "127.0.0.1"], stdout=logf, stderr=logf,
                                              env=env))
            address = json.loads(sched.read_text())["address"]
            with Client(address, timeout="30s") as c:
                c.wait_for_workers(n_workers, timeout=120)
            yield address
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
