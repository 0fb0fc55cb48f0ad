"""The single-photo pipeline: detect → coarse landmark fit → medium Laplacian deformation → fine
shape from shading → texture/illumination → outputs.

`fit_photo` returns one FaceResult per face; `write_result` writes OUTDIR/<stem>/ (or <stem>_faceK/
for the extra faces of a photo): mesh.obj + mesh.mtl + texture.png, params.json, overlay.png,
preview.png, landmarks.json, and with the fine stage depth_refined.png, normals.png and detail.obj — each file
atomically.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..detection import landmarks as lmk
from ..detection.segment import FaceLabel, parse_face, person_mask
from ..errors import InputError
from ..geometry.camera import Camera, yaw_of_rotation
from ..geometry.draw import draw_points, draw_text
from ..geometry.mesh import write_obj
from ..geometry.render import get_renderer, vertex_visibility
from ..io import read_image, write_image_atomic, write_json_atomic
from .coarse import fit_landmarks
from .export import MESH_FORMATS, write_glb, write_ply, write_textured_obj
from .fine import detail_mesh, refine_depth
from .medium import deform_to_landmarks
from .overlay import face_overlay, fit_preview
from .texture import fit_texture, uv_texture

STAGES = ("coarse", "medium", "fine")
DEFAULT_STAGES = ("coarse", "medium", "fine")
# Photos larger than this are fitted on an area-averaged copy of this many pixels: detection, the fits,
# the texture and the overlays need no more, and memory and time stay bounded whatever the photo's size.
WORK_MAX_PIXELS = 4_000_000


@dataclass
class WorkingImage:
    """The copy of a photo the stages work on: pixel u′ = s (u + 0.5) − 0.5 of the photo's pixel u, per
    axis (s = 1: the photo itself)."""

    image: np.ndarray          # (h, w, 3) uint8
    photo_size: tuple          # (W, H) of the photo
    scale: tuple = (1.0, 1.0)  # (sx, sy) = (w / W, h / H)

    @staticmethod
    def of(photo, max_pixels=None):
        """The working copy of `photo` (H, W, 3): itself, or area-averaged to max_pixels (default
        WORK_MAX_PIXELS)."""
        max_pixels = WORK_MAX_PIXELS if max_pixels is None else max_pixels
        H, W = photo.shape[:2]
        if H * W <= max_pixels:
            return WorkingImage(photo, (W, H))
        import cv2

        s = (max_pixels / (H * W)) ** 0.5
        w, h = max(1, int(round(W * s))), max(1, int(round(H * s)))
        return WorkingImage(cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA), (W, H), (w / W, h / H))

    def matrix(self):
        """3×3 A with working pixel = A · photo pixel (homogeneous)."""
        sx, sy = self.scale
        return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])

    def to_photo(self, points):
        """(K, 2) working-image pixels -> photo pixels (the same array when the copy is the photo)."""
        if self.scale == (1.0, 1.0):
            return np.asarray(points, float)
        return (np.asarray(points, float) + 0.5) / np.asarray(self.scale) - 0.5


@dataclass
class FaceResult:
    image_path: str
    face_index: int
    landmarks: lmk.FaceLandmarks
    fit: object                       # fitter.photo.coarse.ImageFit
    identity: np.ndarray
    vertices: np.ndarray              # (N, 3) model frame, mm
    medium: object = None             # fitter.photo.medium.MediumResult when the stage ran
    fine: object = None               # fitter.photo.fine.FineResult when the stage ran
    texture: object = None            # fitter.photo.texture.TextureFit
    texture_image: np.ndarray = None  # (T, T, 3) uint8
    overlay: np.ndarray = None        # (h, w, 3) uint8: the working image with the fitted face and landmarks
    preview: np.ndarray = None        # (s, 4 s, 3) uint8: photo | overlay | shape | textured (fitter.photo.overlay)
    times: dict = field(default_factory=dict)
    focal_source: str = "estimated"   # "given", "exif" or "estimated"
    working: "WorkingImage" = None    # the copy of the photo the stages ran on (cameras and pixels are its own)


def exif_focal_px(path, width, height):
    """Focal length in pixels from EXIF FocalLengthIn35mmFilm (36 mm frame width), or None."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            exif = im.getexif()
            f35 = exif.get_ifd(0x8769).get(0xA405) or exif.get(0xA405)
    except Exception:  # noqa: BLE001 - EXIF is optional metadata; any reader failure means "none"
        return None
    if not f35:
        return None
    return float(f35) / 36.0 * max(width, height)


def check_stages(stages):
    """The stages to run (a tuple): known ones, each once, in the pipeline's order, starting with coarse.
    Raises InputError."""
    stages = tuple(stages)
    if not stages:
        raise InputError(f"give at least one stage ({', '.join(STAGES)})")
    for s in stages:
        if s not in STAGES:
            raise InputError(f"unknown stage '{s}' (available: {', '.join(STAGES)})")
    if len(set(stages)) != len(stages):
        raise InputError("a stage is named twice")
    if stages[0] != "coarse":
        raise InputError("'coarse' comes first: every later stage starts from it")
    if [STAGES.index(s) for s in stages] != sorted(STAGES.index(s) for s in stages):
        raise InputError(f"the stages run in the order {', '.join(STAGES)}: write them in that order")
    return stages


def check_focal(focal):
    """A given focal length (px) must be positive and finite; None means 'not given'. Raises InputError."""
    if focal is not None and not (np.isfinite(focal) and focal > 0):
        raise InputError(f"{focal:g} is not a focal length (not a positive, finite number of pixels)")
    return focal


def fit_photo(path, prepared, stages=DEFAULT_STAGES, focal=None, all_faces=False, texture_size=1024,
              image=None, fine_config=None):
    """Fit every requested face of the photo at `path` (or of `image`, (H, W, 3) uint8, when given) with
    the prepared model (`fitter.prepared.PreparedModel`). Returns a list of FaceResult. Raises InputError / NoFaceError."""
    stages, focal = check_stages(stages), check_focal(focal)
    prepared.require_embedding()
    t0 = time.perf_counter()
    prepared.landmark_basis  # built once per model (~0.8 s), not part of any photo's fit time
    if "medium" in stages:
        prepared.laplacian_deformer  # once per model (~2 s): Laplacian, anchors, CHOLMOD analysis
    t_prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    photo = read_image(path) if image is None else image
    work = WorkingImage.of(photo)
    del photo  # a large photo is not kept: the stages use the working copy
    img = work.image
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    faces = lmk.detect_landmarks(img, all_faces=all_faces)
    t_detect = time.perf_counter() - t0
    # a focal length in the photo's pixels, in the working image's (EXIF's comes from the photo's size)
    focal_px, focal_source = (float(focal), "given") if focal else (exif_focal_px(path, *work.photo_size), "exif")
    if focal_px is None:
        focal_source = "estimated"
    else:
        focal_px *= float(np.mean(work.scale))
    person = person_mask(img) if faces else None
    results = []
    for k, face in enumerate(faces):
        times = {"read_s": t_read, "detect_s": t_detect / len(faces), "model_prepare_s": t_prepare}
        r = _fit_face(prepared, path, k, face, img, person, stages, focal_px, texture_size, fine_config, times)
        r.focal_source = focal_source
        r.working = work
        results.append(r)
    return results


def _fit_face(prepared, path, k, face, img, person, stages, focal_px, texture_size, fine_config, times):
    """The stages for one detected face: coarse, then medium and fine when asked, texture, overlay."""
    model, F = prepared.model, prepared.render_faces
    H, W = img.shape[:2]
    t0 = time.perf_counter()
    fit = fit_landmarks(prepared, [face.points], [Camera.for_image(W, H, focal_px)], free_focal=focal_px is None)
    times["coarse_s"] = time.perf_counter() - t0
    im = fit.images[0]
    V = model.shape(fit.identity, im.expression)
    r = FaceResult(str(path), k, face, im, fit.identity, V, times=times)
    labels = parse_face(img, face, person)
    res = get_renderer().render(V, F, im.camera)
    fitted_2d, error_px = im.fitted_2d, im.error_px
    if "medium" in stages:
        r.medium = deform_to_landmarks(prepared, V, im.camera, face.points, res.depth)
        times["medium_s"] = r.medium.seconds
        V = r.vertices = r.medium.vertices
        res = get_renderer().render(V, F, im.camera)
        fitted_2d = r.medium.fitted_2d
        error_px = lmk.landmark_error(fitted_2d, face.points, im.weights > 0)[0]
    if "fine" in stages:
        try:
            r.fine = refine_depth(prepared, V, im.camera, img, labels, fine_config)
            times["fine_s"] = r.fine.seconds
            V = r.vertices = r.fine.vertices
            res = get_renderer().render(V, F, im.camera)
        except (InputError, RuntimeError) as e:  # a tiny face, no skin, Ceres layout: keep the medium mesh
            times["fine_error"] = str(e)
    t0 = time.perf_counter()
    vis = vertex_visibility(V, F, im.camera, res)
    try:
        r.texture = fit_texture(prepared, V, im.camera, img, vis, labels == FaceLabel.SKIN)
        r.texture_image = uv_texture(prepared, V, im.camera, img, res.depth, r.texture, size=texture_size,
                                     photo_mask=labels != FaceLabel.OTHER)
    except ValueError as e:  # too little visible skin: keep the geometry, say why there is no texture
        r.times["texture_error"] = str(e)
    times["texture_s"] = time.perf_counter() - t0
    marked = overlay(img, prepared, V, im, fitted_2d)
    r.overlay = overlay_caption(marked, im, error_px)
    r.preview = fit_preview(img, prepared, V, im.camera, marked, r.texture_image)
    return r


def overlay(img, prepared, V, im, fitted_2d=None):
    """The photo with the fitted face of V (`fitter.photo.overlay.face_overlay`), detected landmarks (blue)
    and fitted landmarks (green; default: the coarse fit's)."""
    fitted_2d = im.fitted_2d if fitted_2d is None else fitted_2d
    out8 = face_overlay(img, prepared, V, im.camera)
    radius = float(np.clip(lmk.outer_interocular(im.landmarks_2d) / 90.0, 0.8, 3.0))
    out8 = draw_points(out8, im.landmarks_2d, (60, 140, 255), radius=radius)
    return draw_points(out8, fitted_2d, (40, 230, 40), radius=radius)


def overlay_caption(marked, im, error_px=None):
    """The overlay's caption: the median landmark error and the colour key."""
    error_px = im.error_px if error_px is None else error_px
    iod = im.error_px / max(im.error_iod, 1e-12)
    return draw_text(marked, [f"landmark error {error_px:.1f} px ({100 * error_px / iod:.1f} % IOD)",
                              "blue: detected  green: fitted"], scale=0.5 * max(1.0, im.camera.width / 800))


def stages_dict(r: FaceResult):
    """Per-stage record for params.json: time and landmark error (px, median) of each stage run."""
    out = {"coarse": {"seconds": round(r.times["coarse_s"], 4), "landmark_error_px": round(r.fit.error_px, 4)}}
    if r.medium is not None:
        out["medium"] = r.medium.to_dict()
    if r.fine is not None:
        out["fine"] = r.fine.to_dict()
    return out


def result_dir(outdir, path, face_index):
    stem = Path(path).stem
    return Path(outdir) / (stem if face_index == 0 else f"{stem}_face{face_index}")


def check_result_dir(outdir, path, face_index):
    """InputError when something other than a folder stands where this face's outputs go."""
    d = result_dir(outdir, path, face_index)
    if d.exists() and not d.is_dir():
        raise InputError(f"{d} exists and is not a folder: this photo's outputs go there; move it or use "
                         f"another -o")
    return d




def write_result(r: FaceResult, prepared, outdir, mesh_format="obj"):
    """Write one face's outputs into OUTDIR/<photo stem>/ (OUTDIR/<stem>_faceK/ for a photo's further
    faces), each file atomically; returns the folder. mesh_format "glb" or "ply" also writes mesh.glb /
    mesh.ply (`fitter.photo.export`) beside mesh.obj."""
    if mesh_format not in MESH_FORMATS:
        raise InputError(f"unknown mesh format '{mesh_format}' (available: {', '.join(MESH_FORMATS)})")
    model = prepared.model
    d = check_result_dir(outdir, r.image_path, r.face_index)
    im = r.fit
    cam = im.camera
    Vcam = cam.to_camera(r.vertices)
    if r.texture_image is not None:
        write_textured_obj(d / "mesh.obj", Vcam, model, r.texture_image)
    else:
        write_obj(d / "mesh.obj", Vcam, model.faces, model.uv, model.uv_faces)
    for fmt in ("glb", "ply"):
        if mesh_format == fmt and model.uv is not None:
            (write_glb if fmt == "glb" else write_ply)(d / f"mesh.{fmt}", Vcam, model.faces, model.uv, model.uv_faces,
                                                        r.texture_image)
        else:  # a rerun in another format must not leave an earlier mesh of this one beside the new files
            (d / f"mesh.{fmt}").unlink(missing_ok=True)
    tex = r.texture
    work = r.working or WorkingImage(None, (cam.width, cam.height))
    K_photo = np.linalg.solve(work.matrix(), cam.K)  # the photo's own pixels for all a user maps back onto it
    detected = dict(r.landmarks.to_dict(), points=np.round(work.to_photo(r.landmarks.points), 3).tolist(),
                    box=[float(b) for b in work.to_photo(np.reshape(r.landmarks.box, (2, 2))).ravel()],
                    image_size=list(work.photo_size))
    params = {
        "image": str(Path(r.image_path).resolve()), "face_index": r.face_index,
        "image_size": list(work.photo_size),
        "working_image": {"size": [cam.width, cam.height], "scale": [round(v, 9) for v in work.scale],
                          "note": "the stages ran on this copy; the pixel figures under 'stages' and "
                                  "'landmarks' are its pixels"},
        "camera": {"K": K_photo.round(6).tolist(), "R": cam.R.round(9).tolist(), "t_mm": cam.t.round(6).tolist(),
                   "focal_source": r.focal_source,
                   "yaw_deg": round(yaw_of_rotation(cam.R), 3)},
        "mesh_frame": "camera (OpenCV: x right, y down, z forward), mm",
        "model": {"name": model.name, "sha256": model.metadata.get("model_sha256")},
        "identity": r.identity.round(6).tolist(),
        "expression": dict(zip(model.expression_names, im.expression.round(6).tolist())),
        "landmarks": {"count": 478, "error_px_median": round(im.error_px, 4),
                      "error_iod_median": round(im.error_iod, 6),
                      "interocular_px": round(r.landmarks.interocular(), 3)},
        "lighting": None if tex is None else {"sh": tex.sh.round(6).tolist(), "phong": tex.phong.to_dict(),
                                              "rms_sh": round(tex.residual_sh, 5),
                                              "rms_phong": round(tex.residual_phong, 5)},
        "stages": stages_dict(r),
        "times_s": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.times.items()},
    }
    write_json_atomic(d / "params.json", params)
    write_json_atomic(d / "landmarks.json", {"detected": detected,
                                             "fitted": np.round(work.to_photo(im.fitted_2d), 3).tolist(),
                                             "convention": "OpenCV pixels: (0, 0) is the centre of the top-left pixel"})
    write_image_atomic(d / "overlay.png", r.overlay)
    if r.preview is not None:
        write_image_atomic(d / "preview.png", r.preview)
    if r.fine is not None:
        write_fine_outputs(r.fine, d)
    else:  # a rerun without the fine stage must not leave an earlier run's detail next to the new mesh
        for name in FINE_OUTPUTS:
            (d / name).unlink(missing_ok=True)
    return d


FINE_OUTPUTS = ("depth_refined.png", "normals.png", "detail.obj")


DEPTH_PNG_MM_PER_UNIT = 0.1


def write_fine_outputs(fine, d):
    """depth_refined.png (16-bit, 0.1 mm per unit, 0 = no surface; the crop camera is in params.json),
    normals.png (camera-frame normals as (n + 1) / 2 in RGB, black where undefined) and detail.obj (the refined depth as a
    pixel-grid mesh, camera frame, mm)."""
    depth = np.clip(np.rint(fine.depth / DEPTH_PNG_MM_PER_UNIT), 0, 65535).astype(np.uint16)
    write_image_atomic(d / "depth_refined.png", depth)
    n, valid = fine.normals()
    rgb = np.where(valid[..., None], (n + 1) / 2, 0.0)
    write_image_atomic(d / "normals.png", (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    X, F = detail_mesh(fine)
    write_obj(d / "detail.obj", X, F)
