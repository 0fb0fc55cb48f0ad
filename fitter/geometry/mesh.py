"""Triangle-mesh basics: OBJ input/output, triangulation, normals, adjacency and the one Laplacian.

Conventions: vertices `V (N, 3) float64` in mm, triangles `F (M, 3) int32`, UVs `UV (T, 2)` with
their own triangles `F_uv (M, 3) int32` (OBJ style: a vertex can carry several UVs across seams).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp

from ..errors import InputError


@dataclass
class ObjMesh:
    """What an OBJ file holds. `F` and `F_uv` are triangles (polygons are fan-split)."""

    V: np.ndarray
    F: np.ndarray
    UV: Optional[np.ndarray] = None
    F_uv: Optional[np.ndarray] = None
    polygon_of_triangle: Optional[np.ndarray] = None  # (M,) index of the source polygon


def _floats(lines, prefix):
    n = len(prefix)
    body = b" ".join(l[n:] for l in lines if l.startswith(prefix))
    return np.fromstring(body.decode("ascii"), sep=" ") if body else np.zeros(0)


def _obj_lines_and_vertices(path):
    """The file's lines and its vertices (N, 3). A `v` line holds x y z, optionally w or r g b (dropped).
    Raises InputError naming the first malformed `v` line (a file cut short ends in one)."""
    try:
        lines = Path(path).read_bytes().split(b"\n")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    v_lines = [l for l in lines if l.startswith(b"v ")]
    if not v_lines:
        raise InputError(f"{path} has no 'v x y z' vertex lines (not an OBJ mesh)")
    try:
        v = _floats(v_lines, b"v ")
    except (ValueError, UnicodeDecodeError):
        v = np.zeros(0)
    for per_line in (3, 4, 6, 7):  # x y z, x y z w, x y z r g b, x y z w r g b (MeshLab, ZBrush)
        if v.size == per_line * len(v_lines):
            return lines, v.reshape(len(v_lines), per_line)[:, :3]
    k = _bad_vertex_line(lines)
    cut = " (the file looks cut short)" if k is not None and k >= len(lines) - 2 else ""
    where = f"line {k + 1}: {lines[k][:60].decode('ascii', 'replace').strip()!r}" if k is not None else \
        "vertex lines of mixed lengths"
    raise InputError(f"{path}: malformed vertex line, {where}{cut}; give a complete OBJ file")


def _bad_vertex_line(lines):
    """Index of the first `v` line that is not 3, 4, 6 or 7 numbers, or None."""
    for k, l in enumerate(lines):
        if l.startswith(b"v "):
            try:
                vals = [float(t) for t in l.split()[1:]]
            except ValueError:
                return k
            if len(vals) not in (3, 4, 6, 7):
                return k
    return None


def read_obj_vertices(path) -> np.ndarray:
    """Only the `v` lines of an OBJ, as (N, 3) float64 (fast path for blendshape files)."""
    return _obj_lines_and_vertices(path)[1]


def read_obj(path) -> ObjMesh:
    """Read vertices, UVs and polygons of an OBJ file; polygons are split into triangles."""
    lines, V = _obj_lines_and_vertices(path)
    uv = _floats(lines, b"vt ")
    UV = uv.reshape(-1, 2) if uv.size and uv.size % 2 == 0 else None
    tri_v, tri_t, poly = [], [], []
    for pi, l in enumerate(l for l in lines if l.startswith(b"f ")):
        toks = l.split()[1:]
        try:
            vi = [int(t.split(b"/")[0]) for t in toks]
            ti = [int(s[1]) if len(s := t.split(b"/")) > 1 and s[1] else 0 for t in toks]
        except ValueError:
            raise InputError(f"{path}: malformed face line {l[:60].decode('ascii', 'replace').strip()!r}; "
                             f"give a complete OBJ file") from None
        for k in range(1, len(vi) - 1):
            tri_v.append((vi[0], vi[k], vi[k + 1]))
            tri_t.append((ti[0], ti[k], ti[k + 1]))
            poly.append(pi)
    if not tri_v:
        raise InputError(f"{path} has no faces")
    F = np.asarray(tri_v, dtype=np.int64)
    F = np.where(F < 0, F + len(V), F - 1).astype(np.int32)
    F_uv = None
    if UV is not None:
        T = np.asarray(tri_t, dtype=np.int64)
        if (T > 0).all():
            F_uv = (T - 1).astype(np.int32)
    if F.min() < 0 or F.max() >= len(V):
        raise InputError(f"{path} has face indices outside its {len(V)} vertices")
    return ObjMesh(V, F, UV if F_uv is not None else None, F_uv, np.asarray(poly, dtype=np.int32))


def write_obj(path, V, F, UV=None, F_uv=None, mtl_name=None, material=None):
    """Write a triangle mesh as OBJ text (atomically). 1-based indices, `v/vt` when UVs are given."""
    from ..io import write_text_atomic

    out = []
    if mtl_name:
        out.append(f"mtllib {mtl_name}")
    out.append("\n".join("v %.6f %.6f %.6f" % tuple(p) for p in np.asarray(V)))
    if UV is not None:
        out.append("\n".join("vt %.6f %.6f" % tuple(t) for t in np.asarray(UV)))
    if material:
        out.append(f"usemtl {material}")
    F1 = np.asarray(F) + 1
    if UV is not None:
        T1 = np.asarray(F_uv) + 1
        out.append("\n".join(f"f {a}/{d} {b}/{e} {c}/{f}" for (a, b, c), (d, e, f) in zip(F1, T1)))
    else:
        out.append("\n".join("f %d %d %d" % tuple(f) for f in F1))
    write_text_atomic(path, "\n".join(out) + "\n")


def interpolate(values, F, tri, bary):
    """Barycentric interpolation: (K, C) = Σ_k bary[:, k] values[F[tri, k]] (values (N, C) or (N,))."""
    values = np.asarray(values)
    f = np.asarray(F)[tri]
    b = np.asarray(bary, values.dtype if values.dtype.kind == "f" else np.float64)
    if values.ndim == 1:
        return b[:, 0] * values[f[:, 0]] + b[:, 1] * values[f[:, 1]] + b[:, 2] * values[f[:, 2]]
    return b[:, 0:1] * values[f[:, 0]] + b[:, 1:2] * values[f[:, 1]] + b[:, 2:3] * values[f[:, 2]]


def face_normals(V, F, normalize=True):
    """Per-triangle normals (M, 3); unnormalised length is twice the triangle area."""
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    if normalize:
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    return n


def vertex_normals(V, F):
    """Area-weighted vertex normals (N, 3), unit length (zero for isolated vertices)."""
    fn = face_normals(V, F, normalize=False)
    idx = np.asarray(F).T.ravel()  # corner k of every triangle, k = 0, 1, 2
    vn = np.stack([np.bincount(idx, weights=np.tile(fn[:, c], 3), minlength=len(V)) for c in range(3)], axis=1)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-30)


def tangent_frames(normals):
    """Two unit tangents (n, 3) each, orthogonal to the unit normals (n, 3) and to each other."""
    n = np.asarray(normals, float)
    a = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    t1 = np.cross(n, a)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    return t1, np.cross(n, t1)


def adjacency(F, n_vertices) -> sp.csr_matrix:
    """Symmetric vertex adjacency (N, N) with ones on mesh edges."""
    i = np.concatenate([F[:, 0], F[:, 1], F[:, 2], F[:, 1], F[:, 2], F[:, 0]])
    j = np.concatenate([F[:, 1], F[:, 2], F[:, 0], F[:, 0], F[:, 1], F[:, 2]])
    A = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices))
    A.data[:] = 1.0
    return A


def uniform_laplacian(F, n_vertices) -> sp.csr_matrix:
    """Uniform-weight Laplacian L = I - D^-1 A (ω_ij = 1/N_i), so (L V)_i = v_i - mean of its neighbours.

    The project's one Laplacian: Laplacian coordinates, smoothness priors and NICP stiffness use it.
    Isolated vertices get a zero row.
    """
    A = adjacency(F, n_vertices)
    deg = np.asarray(A.sum(axis=1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    return (sp.diags((deg > 0).astype(float)) - sp.diags(inv) @ A).tocsr()


def boundary_vertices(F, n_vertices) -> np.ndarray:
    """Boolean (N,) mask of vertices on an open boundary (edges used by one triangle only)."""
    e = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    mask = np.zeros(n_vertices, bool)
    mask[uniq[counts == 1].ravel()] = True
    return mask


def submesh(F, vertex_mask):
    """Triangles whose three vertices are in `vertex_mask`, re-indexed; returns (F_sub, old_index_of_new)."""
    keep = vertex_mask[F].all(axis=1)
    old = np.flatnonzero(vertex_mask)
    new_of_old = -np.ones(len(vertex_mask), np.int64)
    new_of_old[old] = np.arange(len(old))
    return new_of_old[F[keep]].astype(np.int32), old


def subdivide_midpoint(V, F, values=None):
    """One 1-to-4 midpoint subdivision of triangles F over vertices V (N, 3): returns (V', F', values')
    with the original vertices first, then one new vertex per edge of F; `values` (N, ...) per-vertex
    attributes are averaged onto the midpoints (None: not returned, i.e. values' is None)."""
    V = np.asarray(V, float)
    F = np.asarray(F, np.int64)
    e = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
    edges, inverse = np.unique(e, axis=0, return_inverse=True)
    mid = len(V) + inverse.reshape(3, -1).T  # (T, 3): midpoints of edges 01, 12, 20
    V2 = np.concatenate([V, (V[edges[:, 0]] + V[edges[:, 1]]) / 2])
    a, b, c = F.T
    ab, bc, ca = mid.T
    F2 = np.concatenate([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1), np.stack([ca, bc, c], 1),
                         np.stack([ab, bc, ca], 1)])
    vals = None
    if values is not None:
        values = np.asarray(values)
        vals = np.concatenate([values, (values[edges[:, 0]] + values[edges[:, 1]]) / 2])
    return V2, F2, vals
