"""Foundation benchmark: the renderer (against open3d's ray caster), visibility, detection, install."""
import os
import platform
import tempfile
import time

import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import look_at_face
from ..geometry.render import get_renderer, vertex_visibility
from ..install import installer
from ..model import store
from ..model.painting import DISTANCE_MM, FOCAL_PX
from ..prepared import PreparedModel

from .common import timeit


def foundation(name="ict", repeats=20, install_from=None):
    """Render time of the model at 512² (index map + depth + normals + colour in one pass), against
    open3d's ray caster producing the same depth/triangle-id/barycentric maps (the peer a user would
    pick), per-vertex visibility, landmark detection on a render, and optionally a full install."""
    prepared = PreparedModel.load(name)
    model = prepared.model
    V = model.mean
    F = prepared.render_faces
    size = 512
    cam = look_at_face(V[model.regions["face"]].mean(0), 20, 5, DISTANCE_MM, FOCAL_PX, size, size)
    albedo = prepared.painted_albedo
    renderer = get_renderer()
    res = renderer.render(V, F, cam, vertex_colors=albedo)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {renderer.ctx.info['GL_RENDERER']}",
           "model": name, "vertices": int(model.n_vertices), "triangles_rendered": int(len(F)),
           "image": f"{size}x{size}", "repeats": repeats}
    med, best = timeit(lambda: renderer.render(V, F, cam, vertex_colors=albedo), repeats)
    out["render_ms_median"], out["render_ms_min"] = round(1e3 * med, 1), round(1e3 * best, 1)

    import open3d as o3d

    def o3d_raycast():
        scene = o3d.t.geometry.RaycastingScene()
        Vc = cam.to_camera(V).astype(np.float32)
        scene.add_triangles(o3d.core.Tensor(Vc), o3d.core.Tensor(F.astype(np.uint32)))
        d = cam.image_rays(size, size).astype(np.float32)
        rays = np.concatenate([np.zeros_like(d), d], -1).reshape(-1, 6)
        r = scene.cast_rays(o3d.core.Tensor(rays))
        return r["t_hit"].numpy(), r["primitive_ids"].numpy(), r["primitive_uvs"].numpy()

    pmed, pbest = timeit(o3d_raycast, max(3, repeats // 4))
    out["peer_open3d_raycast_ms_median"] = round(1e3 * pmed, 1)
    out["render_speedup_vs_open3d"] = round(pmed / med, 2)
    t_hit, prim, _ = o3d_raycast()
    agree = (prim.reshape(size, size).astype(np.int64) == np.where(res.mask, res.triangle_id, 2**32 - 1)).mean()
    out["triangle_id_agreement_with_open3d"] = round(float(agree), 4)
    vmed, _ = timeit(lambda: vertex_visibility(V, F, cam, res), repeats)
    out["visibility_ms_median"] = round(1e3 * vmed, 1)
    img = res.color_uint8()
    dmed, _ = timeit(lambda: lmk.detect_landmarks(img), max(3, repeats // 4))
    out["mediapipe_detect_ms_median"] = round(1e3 * dmed, 1)
    if install_from:
        old = os.environ.get("FACEFIT_HOME")
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["FACEFIT_HOME"] = tmp
            try:
                t0 = time.perf_counter()
                installer.install(name, install_from, progress=False, log=lambda *a: None)
                out["install_s"] = round(time.perf_counter() - t0, 1)
                info = store.model_info(name)
                out["embedding_build_s"] = info["landmark_embedding"].get("build_seconds")
            finally:
                if old is None:
                    os.environ.pop("FACEFIT_HOME", None)
                else:
                    os.environ["FACEFIT_HOME"] = old
    return out
