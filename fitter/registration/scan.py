"""Reading scans (OBJ, legacy VTK polydata, PLY/STL/OFF/glTF through open3d), converting them to mm,
and finding a scan's face frame (forward, up, nose tip) with the project's renderer and detector."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..detection import landmarks as lmk
from ..errors import InputError, NoFaceError
from ..geometry.camera import Camera, intrinsics
from ..geometry.mesh import read_obj
from ..geometry.render import get_renderer
from ..io import read_image
from ..model.morphable import UNIT_SCALES, infer_unit_scale
from ..photo.texture import sample_image


@dataclass
class Scan:
    V: np.ndarray                       # (N, 3) mm
    F: np.ndarray                       # (M, 3) int32
    colors: Optional[np.ndarray] = None  # (N, 3) in [0, 1] when the file has vertex colours
    uv: Optional[np.ndarray] = None      # (N, 2) per-vertex texture coordinates
    unit_scale: float = 1.0
    notes: list = field(default_factory=list)  # what reading changed (e.g. dropped vertices), for the user


UNTEXTURED_SKIN = (0.80, 0.62, 0.52)  # the colour an untextured scan is rendered with
SCAN_LIGHT = (0.2, -0.3, -1.0)          # the light and background of a scan's view (registration, overlay)
SCAN_BACKGROUND = (0.3, 0.3, 0.32)


def render_colors(scan: "Scan"):
    """(N, 3) per-vertex colours to render a scan with: its own, or a uniform skin tone."""
    return scan.colors if scan.colors is not None else np.tile(UNTEXTURED_SKIN, (len(scan.V), 1))


def render_scan(scan: "Scan", camera: Camera, light_dir=SCAN_LIGHT, background=SCAN_BACKGROUND, colors=None):
    """The renderer's result (colour, depth, index maps) for the scan seen by `camera`, coloured by
    `colors` (N, 3) (default: `render_colors`)."""
    colors = render_colors(scan) if colors is None else colors
    return get_renderer().render(scan.V, scan.F, camera, vertex_colors=colors, light_dir=light_dir,
                                 background=background)


def _read_vtk(path):
    """ASCII legacy VTK POLYDATA: POINTS, POLYGONS (split into triangles), optional TEXTURE_COORDINATES."""
    toks = Path(path).read_text(errors="replace").split()
    if "POLYDATA" not in toks[:20]:
        raise InputError(f"{path}: only ASCII legacy VTK POLYDATA files are supported")

    def after(key):
        return toks.index(key) + 1 if key in toks else None

    i = after("POINTS")
    if i is None:
        raise InputError(f"{path} has no POINTS")
    n = int(toks[i])
    V = np.array(toks[i + 2:i + 2 + 3 * n], float).reshape(n, 3)
    tris = []
    j = after("POLYGONS")
    if j is not None:
        m, pos = int(toks[j]), j + 2
        for _ in range(m):
            k = int(toks[pos])
            idx = [int(t) for t in toks[pos + 1:pos + 1 + k]]
            tris += [(idx[0], idx[a], idx[a + 1]) for a in range(1, k - 1)]
            pos += k + 1
    if not tris:
        raise InputError(f"{path} has no POLYGONS")
    uv = None
    j = after("TEXTURE_COORDINATES")
    if j is not None:
        dim = int(toks[j + 1])
        uv = np.array(toks[j + 3:j + 3 + dim * n], float).reshape(n, dim)[:, :2]
    return V, np.array(tris, np.int32), uv


def read_scan(path, units=None, units_option="--scan-units") -> Scan:
    """A scan in mm. `units` ('mm', 'cm', 'm') or None to infer from the size of the head (units_option:
    the command's option that sets them, named when they cannot be inferred). Vertices with non-finite
    coordinates are dropped with the faces that use them (said in `Scan.notes`)."""

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    suffix = path.suffix.lower()
    colors = uv = None
    notes = []
    if suffix == ".obj":
        m = read_obj(path)
        V, F = m.V, m.F
    elif suffix == ".vtk":
        V, F, uv = _read_vtk(path)
    elif suffix in (".ply", ".stl", ".off", ".glb", ".gltf"):
        V, F, colors = _read_open3d(path, notes)
    else:
        raise InputError(f"{path}: unsupported mesh format '{suffix}' (use .obj, .vtk, .ply, .stl, .off, .glb)")
    V, F, colors, uv, dropped = _drop_non_finite(path, np.asarray(V, float), np.asarray(F, np.int64), colors, uv)
    notes += dropped
    if len(F) == 0:
        raise InputError(f"{path} has no triangles left with finite vertices")
    used = np.unique(F)
    scale = UNIT_SCALES[units] if units else infer_unit_scale(V[used], f"give {units_option} mm|cm|m")
    if units:
        check_head_size(path, V[used], units, units_option)
    return Scan(V * scale, F.astype(np.int32), colors, uv, scale, notes)


HEAD_EXTENT_MM = (50.0, 2500.0)  # the largest side of a scan holding a head: a face alone up to a whole body


def check_head_size(path, V, units, units_option="--scan-units"):
    """Raises InputError when the scan's vertices V (the file's numbers), read in `units`, are too small or
    too large to hold a head: the units are wrong. The message names the units its size suggests."""
    size = np.ptp(np.asarray(V, float), axis=0) * UNIT_SCALES[units]
    lo, hi = HEAD_EXTENT_MM
    if lo <= size.max() <= hi:
        return
    across = " x ".join(f"{v / 1000:.3g} m" if size.max() >= 1e4 else f"{v:.0f} mm" if v >= 1 else f"{v:.2g} mm"
                        for v in size)
    try:
        said = {v: k for k, v in UNIT_SCALES.items()}[infer_unit_scale(V)]
        hint = f"; its size says {said}: give {units_option} {said}"
    except InputError:
        hint = f"; give {units_option} with the units the file is in"
    raise InputError(f"{path}: read in {units} the scan is {across} across, not the size of a head "
                     f"({lo:g}-{hi:g} mm){hint}")


MIN_CLOUD_POINTS = 2000     # fewer points than this are no face scan
POISSON_DEPTH = 8           # octree depth of the surface reconstruction (~1 mm cells on a head)
POISSON_TRIM = 0.05         # the least supported share of the reconstructed vertices is cut away


def _read_open3d(path, notes):
    """(V, F, colours or None) of a file open3d reads. A point cloud (a PLY with vertices and no faces, as
    depth sensors and photogrammetry export) is meshed (`mesh_point_cloud`), said in `notes`."""
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # no coloured warnings on stdout
    mesh = o3d.io.read_triangle_mesh(str(path))
    V, F = np.asarray(mesh.vertices, float), np.asarray(mesh.triangles, np.int32)
    if len(F):
        return V, F, (np.asarray(mesh.vertex_colors, float) if mesh.has_vertex_colors() else None)
    cloud = o3d.io.read_point_cloud(str(path)) if path.suffix.lower() == ".ply" else None
    n_points = 0 if cloud is None else len(cloud.points)
    if n_points == 0:
        raise InputError(f"{path} holds no triangle mesh open3d can read")
    if n_points < MIN_CLOUD_POINTS:
        raise InputError(f"{path} is a point cloud of only {n_points} points: a face scan needs at least "
                         f"{MIN_CLOUD_POINTS} (or register the RGB-D frame it came from with COLOR DEPTH --intrinsics)")
    P = np.asarray(cloud.points, float)
    finite = np.isfinite(P).all(axis=1)
    colors = np.asarray(cloud.colors, float)[finite] if cloud.has_colors() else None
    V, F, C = mesh_point_cloud(P[finite], colors)
    notes.append(f"{path}: a point cloud of {n_points} points"
                 + (f" ({n_points - int(finite.sum())} non-finite dropped)" if not finite.all() else "")
                 + f", meshed by Poisson surface reconstruction ({len(F)} triangles)")
    return V, F, C


def mesh_point_cloud(points, colors=None, depth=POISSON_DEPTH, trim=POISSON_TRIM):
    """Triangle mesh (V, F, colours or None) of a point cloud (K, 3) by screened Poisson surface
    reconstruction (open3d): normals from 20 neighbours, oriented consistently over the cloud's tangent
    planes; the reconstructed vertices least supported by points (the `trim` share of lowest density:
    the surface Poisson invents across holes and around the open rim) are removed."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, float)))
    if colors is not None:
        cloud.colors = o3d.utility.Vector3dVector(np.asarray(colors, float))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(20))
    cloud.orient_normals_consistent_tangent_plane(20)
    mesh, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(cloud, depth=depth)
    density = np.asarray(density)
    mesh.remove_vertices_by_mask(density < np.quantile(density, trim))
    V, F = np.asarray(mesh.vertices, float), np.asarray(mesh.triangles, np.int32)
    C = np.asarray(mesh.vertex_colors, float) if colors is not None and mesh.has_vertex_colors() else None
    return V, F, C


def _drop_non_finite(path, V, F, colors, uv):
    """Remove vertices with NaN / inf coordinates and the faces that use them (renumbering the rest)."""
    bad = ~np.isfinite(V).all(axis=1)
    if not bad.any():
        return V, F, colors, uv, []
    keep_f = ~bad[F].any(axis=1)
    new_index = np.cumsum(~bad) - 1
    notes = [f"{path}: dropped {int(bad.sum())} vertices with non-finite coordinates and the "
             f"{int((~keep_f).sum())} faces that use them"]
    return (V[~bad], new_index[F[keep_f]], None if colors is None else colors[~bad],
            None if uv is None else uv[~bad], notes)


def read_points(path):
    """(K, 3) points from a text/CSV file (one 'x y z' or 'x,y,z' per line)."""
    try:
        rows = [l.replace(",", " ").split() for l in Path(path).read_text().splitlines() if l.strip()]
        P = np.array([[float(v) for v in r[:3]] for r in rows if not r[0].startswith("#")])
    except (OSError, ValueError, IndexError) as e:
        raise InputError(f"{path}: cannot read 3D points ({e})") from None
    if P.ndim != 2 or P.shape[1] != 3 or len(P) == 0:
        raise InputError(f"{path}: expected lines of 'x y z'")
    return P


def texture_colors(scan: Scan, texture_path):
    """Per-vertex colours sampled from a texture image at the scan's per-vertex UVs."""

    if scan.uv is None:
        raise InputError("the scan has no texture coordinates: a texture image cannot be mapped onto it")
    img = read_image(texture_path)
    H, W = img.shape[:2]
    uv = scan.uv
    px = np.stack([uv[:, 0] * W - 0.5, (1 - uv[:, 1]) * H - 0.5], 1)
    return sample_image(img.astype(np.float32) / 255.0, px)


@dataclass
class FaceFrame:
    R: np.ndarray        # (3, 3) rows: the scan's x (subject's left -> right as seen), up, forward axes
    nose_tip: np.ndarray  # (3,) mm
    landmarks: np.ndarray  # (478, 3) detected MediaPipe points lifted onto the scan (NaN where off it)
    yaw_found: tuple


def _frontality(points):
    """1 for a face seen from the front, falling to 0 in profile: where the nose tip sits between the
    outer eye corners (iBUG 30 between 36 and 45). The detector also 'finds' faces in side and back
    views of an untextured head; they are large but not frontal."""
    p68 = lmk.to_68(points)
    span = p68[45] - p68[36]
    r = float((p68[30] - p68[36]) @ span / max(span @ span, 1e-9))
    return max(0.0, 1.0 - 2.0 * abs(r - 0.5))


def find_face_frame(scan: Scan, size=512):
    """Orient a scan: render it looking along each axis direction (and rolled), run the landmark
    detector, lift the detected points onto the scan through the index map, and build the face frame
    from the eyes and mouth; the nose tip is MediaPipe point 4 lifted onto the surface (24 renders; the view
    kept is the one with the largest, most frontal face)."""
    V, F = scan.V, scan.F
    center = V[np.unique(F)].mean(0)
    extent = float(np.ptp(V[np.unique(F)], axis=0).max())
    colors = scan.colors if scan.colors is not None else np.full((len(V), 3), 0.72)
    axes = np.eye(3)
    best = None
    for fwd in list(axes) + list(-axes):
        for up in list(axes) + list(-axes):
            if abs(fwd @ up) > 0.5:
                continue
            seen = _face_seen_from(scan, colors, center, fwd, up, 2.2 * extent, size)
            if seen is not None and (best is None or seen[0] > best[0]):
                best = seen + ((tuple(fwd), tuple(up)),)
    if best is None:
        raise NoFaceError("no face found in renders of the scan from the six axis directions")
    _, cam, L3, found = best
    frame = _frame_of(L3, cam, found)
    for _ in range(FRAME_REFINEMENTS):  # look straight at the face found, detect again (sharper, frontal)
        seen = _face_seen_from(scan, colors, frame.nose_tip, frame.R[2], frame.R[1], 2.2 * extent, size)
        if seen is None or seen[0] < 0.5 * best[0]:
            break
        frame = _frame_of(seen[2], seen[1], found)
    return frame


FRAME_REFINEMENTS = 2  # views straight at the face found, each giving a better frame


def _face_seen_from(scan, colors, center, fwd, up, dist, size):
    """(score, camera, lifted (478, 3) landmarks) of the face detected in a render of the scan seen
    against `fwd` with `up` up, or None. Score: the face's area × its frontality."""
    fwd, up = np.asarray(fwd, float), np.asarray(up, float)
    z = -fwd  # the camera looks against the face's forward direction
    y = -(up - z * (up @ z))
    y /= np.linalg.norm(y)  # image y points down
    x = np.cross(y, z)
    R = np.stack([x, y, z])
    cam = Camera(intrinsics(size * 1.2, size, size), R, np.array([0, 0, dist]) - R @ center, size, size)
    res = render_scan(scan, cam, light_dir=(0.0, -0.3, -1.0), background=(0.25, 0.25, 0.28), colors=colors)
    try:
        face = lmk.detect_landmarks(res.color_uint8())[0]
    except NoFaceError:
        return None
    P = res.surface_points(scan.V, scan.F)
    px = np.clip(np.rint(face.points).astype(int), 0, size - 1)
    L3 = P[px[:, 1], px[:, 0]]
    return face.area * _frontality(face.points) * _plausible(L3, cam), cam, L3


NOSE_PROTRUSION_RANGE = (0.22, 0.55)  # nose tip in front of the outer eye corners, in outer interoculars


def _plausible(L3, cam):
    """1 when the landmarks lifted onto the scan have a face's relief - the nose tip stands out in front
    of the outer eye corners by NOSE_PROTRUSION_RANGE of their 3D distance (measured on real and
    synthetic heads: 0.27-0.42) - else 0.05: the detector 'finds' faces on the side or back of an
    untextured head, on smooth surface."""
    p68 = lmk.to_68(np.nan_to_num(L3))
    z = cam.to_camera(p68[[30, 36, 45]])[:, 2]
    iod = float(np.linalg.norm(p68[45] - p68[36]))
    ratio = ((z[1] + z[2]) / 2 - z[0]) / max(iod, 1e-9)
    lo, hi = NOSE_PROTRUSION_RANGE
    return 1.0 if lo <= ratio <= hi and np.isfinite(L3).all(axis=1).mean() > 0.8 else 0.05


def _frame_of(L3, cam, found):
    """The face frame from landmarks lifted onto the scan (eyes and mouth give x and up; forward faces
    the camera that saw them)."""
    eye_r, eye_l, _, mouth_r, mouth_l = lmk.five_points(lmk.to_68(np.nan_to_num(L3)))
    mouth = np.stack([mouth_r, mouth_l]).mean(0)
    xaxis = eye_l - eye_r
    xaxis /= np.linalg.norm(xaxis)
    up = (eye_r + eye_l) / 2 - mouth
    up -= xaxis * (up @ xaxis)
    up /= np.linalg.norm(up)
    fwd = np.cross(xaxis, up)
    if fwd @ (cam.R[2]) > 0:  # forward must point towards the camera
        fwd = -fwd
    return FaceFrame(np.stack([xaxis, up, fwd]), L3[4], L3, found)
