"""Headless GLSL renderer (moderngl on EGL): depth, index map, normals and colour in one pass.

Everything in and out follows the project's OpenCV convention (see fitter.geometry.camera); the OpenGL
projection and the half-pixel offset live only here. Outputs, all (H, W) images with row 0 at the top:
  depth       float32 camera z in mm, 0 where no surface (the project's "missing" value)
  triangle_id int32 triangle index into F, -1 where no surface
  barycentric float32 (H, W, 3), perspective-correct: the surface point is sum_k b_k V[F[tri, k]]
  normal      float32 (H, W, 3) interpolated unit vertex normal in the camera frame
  color       float32 (H, W, 3) in [0, 1] (8-bit precision): per-vertex albedo, Lambert light + ambient
"""
import threading
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import RenderBackendError
from .camera import Camera, opengl_projection
from .mesh import interpolate, vertex_normals

EGL_PACKAGES = "libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri"


@dataclass
class RenderResult:
    depth: np.ndarray
    triangle_id: np.ndarray
    barycentric: np.ndarray
    normal: np.ndarray
    color: np.ndarray

    @property
    def mask(self):
        """(H, W) bool: pixels covered by the mesh."""
        return self.triangle_id >= 0

    def color_uint8(self):
        return (np.clip(self.color, 0, 1) * 255 + 0.5).astype(np.uint8)

    def surface_points(self, V, F):
        """(H, W, 3) model-frame points rebuilt from triangle id + barycentrics (NaN off the mesh)."""
        tri = np.where(self.mask, self.triangle_id, 0)
        H, W = tri.shape
        P = interpolate(np.asarray(V, float), F, tri.ravel(), self.barycentric.reshape(-1, 3)).reshape(H, W, 3)
        P[~self.mask] = np.nan
        return P


ALL_MAPS = ("color", "normal")
GEOMETRY_ONLY = ()  # depth, barycentric and triangle maps only


class Renderer:
    """One EGL context and shader program, reused for every render of the thread that made it."""

    def __init__(self):
        try:
            import moderngl
        except ImportError as e:  # pragma: no cover - dependency missing
            raise RenderBackendError(f"moderngl is not installed ({e}); run 'make setup'") from None
        try:
            self.ctx = moderngl.create_standalone_context(backend="egl", require=330)
        except Exception as e:
            raise RenderBackendError(
                f"no headless OpenGL (EGL) context: {str(e).splitlines()[0]} - install the Debian "
                f"packages: apt-get install {EGL_PACKAGES}") from None
        src = resources.files("fitter.shaders")
        self.program = self.ctx.program(
            vertex_shader=(src / "mesh.vert").read_text(),
            geometry_shader=(src / "mesh.geom").read_text(),
            fragment_shader=(src / "mesh.frag").read_text())
        self._fbos = {}
        self.lock = threading.Lock()

    def _framebuffer(self, width, height):
        key = (width, height)
        if key not in self._fbos:
            ctx = self.ctx
            tex = [ctx.texture((width, height), 4, dtype="f1"),   # colour, 8 bit
                   ctx.texture((width, height), 4, dtype="f4"),   # barycentrics + depth
                   ctx.texture((width, height), 1, dtype="i4"),   # triangle id + 1
                   ctx.texture((width, height), 3, dtype="f4")]   # normal
            fbo = ctx.framebuffer(color_attachments=tex, depth_attachment=ctx.depth_renderbuffer((width, height)))
            if len(self._fbos) > 8:
                self._fbos.pop(next(iter(self._fbos))).release()
            self._fbos[key] = fbo
        return self._fbos[key]

    def render(self, V, F, camera: Camera, width=None, height=None, vertex_colors=None,
               light_dir=(-0.3, -0.4, -0.87), ambient=0.35, diffuse=0.75, background=(0.0, 0.0, 0.0),
               near=None, far=None, maps=ALL_MAPS) -> RenderResult:
        """Render triangles `F` of vertices `V` (model frame, mm) seen by `camera`.

        vertex_colors: (N, 3) albedo in [0, 1] (default mid grey). light_dir: towards the light, camera
        frame. near/far (mm) default to the mesh's own depth range. maps: which of "color" and "normal" to
        read back besides the depth, barycentric and triangle maps (each read costs ~4 ms at 512²); the
        others are None in the result.
        """
        width = int(width or camera.width)
        height = int(height or camera.height)
        if width <= 0 or height <= 0:
            raise ValueError("render needs a positive image size (camera.width/height or width/height)")
        V = np.asarray(V, np.float64)
        F = np.ascontiguousarray(F, dtype=np.int32)
        Vc = camera.to_camera(V)
        Nc = vertex_normals(V, F) @ camera.R.T
        C = np.full((len(V), 3), 0.7) if vertex_colors is None else np.asarray(vertex_colors, float)
        zs = Vc[F.ravel(), 2]
        if near is None:
            near = max(float(zs.min()) * 0.5, 1e-3) if zs.max() > 0 else 1.0
        if far is None:
            far = max(float(zs.max()) * 2.0, near * 2)
        light = np.asarray(light_dir, float)
        light = light / np.linalg.norm(light)
        proj = opengl_projection(camera.K, width, height, near, far)
        data = np.hstack([Vc, Nc, C]).astype("f4")
        with self.lock:
            ctx = self.ctx
            fbo = self._framebuffer(width, height)
            vbo = ctx.buffer(data.tobytes())
            ibo = ctx.buffer(F.astype("u4").tobytes())
            vao = ctx.vertex_array(self.program, [(vbo, "3f 3f 3f", "in_pos", "in_normal", "in_color")],
                                   index_buffer=ibo, index_element_size=4)
            try:
                self.program["proj"].write(proj.T.astype("f4").tobytes())
                self.program["light_dir"].value = tuple(light)
                self.program["ambient"].value = float(ambient)
                self.program["diffuse"].value = float(diffuse)
                fbo.use()
                ctx.enable(ctx.DEPTH_TEST)
                ctx.disable(ctx.CULL_FACE)
                fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)  # zero everywhere: no surface, depth 0, id 0
                vao.render()
                color = np.empty((height, width, 4), np.uint8) if "color" in maps else None
                geom = np.empty((height, width, 4), np.float32)
                tri = np.empty((height, width), np.int32)
                nrm = np.empty((height, width, 3), np.float32) if "normal" in maps else None
                for attachment, out in zip(fbo.color_attachments, (color, geom, tri, nrm)):
                    if out is not None:
                        attachment.read_into(out)
            finally:
                vao.release()
                vbo.release()
                ibo.release()
        tri -= 1
        col = None
        if color is not None:
            col = color[..., :3] * np.float32(1 / 255)
            if any(background):
                col[tri < 0] = np.asarray(background, np.float32)
        return RenderResult(geom[..., 3], tri, geom[..., :3], nrm, col)


_renderers = threading.local()


def get_renderer() -> Renderer:
    """This thread's renderer, created on first use: an EGL context is current in the thread that made
    it, so each thread that renders (a Dask task's thread, a worker pool's) gets its own."""
    r = getattr(_renderers, "renderer", None)
    if r is None:
        r = _renderers.renderer = Renderer()
    return r


def render(V, F, camera, **kwargs) -> RenderResult:
    """Shortcut for get_renderer().render(...)."""
    return get_renderer().render(V, F, camera, **kwargs)


def depth_visible(uv, z, depth, tolerance_mm, window=1):
    """(K,) bool: points at pixels `uv` (K, 2) with camera depths `z` (K,) are not behind the rendered
    surface `depth` (H, W, 0 = none): z <= (farthest depth in the (2 window + 1)² pixel neighbourhood)
    + tolerance (scalar or (K,)). The one depth test of the project (visibility, landmarks, texture)."""
    H, W = depth.shape
    px = np.rint(np.asarray(uv, float)).astype(np.int64)
    inside = (np.asarray(z) > 0) & (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
    if window:  # the farthest depth around each pixel: a grey dilation (outside the image counts as 0)
        import cv2

        depth = cv2.dilate(np.asarray(depth, np.float32), np.ones((2 * window + 1,) * 2, np.uint8),
                           borderType=cv2.BORDER_CONSTANT, borderValue=0.0)
    tol = np.broadcast_to(np.asarray(tolerance_mm, float), np.shape(z))
    vis = np.zeros(len(px), bool)
    i = np.flatnonzero(inside)
    d = depth[px[i, 1], px[i, 0]]
    vis[i] = (d > 0) & (np.asarray(z)[i] <= d + tol[i])
    return vis


def vertex_visibility(V, F, camera: Camera, result: RenderResult, tolerance_mm=None):
    """(N,) bool: vertex inside the image and not hidden behind another surface.

    A vertex is visible when its camera depth is at most the farthest rendered depth in its 3x3 pixel
    neighbourhood plus a tolerance (default 0.5 % of its depth, at least 1 mm): a hidden vertex lies
    behind its occluder by more than the depth varies across one pixel of the occluder.
    Vertices not used by any triangle are reported invisible.
    """
    V = np.asarray(V, float)
    z = camera.to_camera(V)[:, 2]
    tol = np.maximum(1.0, 0.005 * z) if tolerance_mm is None else float(tolerance_mm)
    used = np.zeros(len(V), bool)
    used[np.asarray(F).ravel()] = True
    return depth_visible(camera.project(V), z, result.depth, tol, window=1) & used
