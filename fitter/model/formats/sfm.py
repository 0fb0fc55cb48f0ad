"""eos / Surrey Face Model importer (`.bin`: cereal binary archive of eos::morphablemodel::MorphableModel).

Layout (little endian): uint32 class version (1..4); shape PcaModel; colour PcaModel; for version >= 2
an optional expression model (uint8 'nullopt' flag, then int32 variant index: 0 PcaModel,
1 Blendshapes); for version >= 3 optional landmark definitions (flag, uint64 count, (string, int32)
pairs); texture coordinates (uint64 count, float64 u, v each); for version 4 texture triangles
(uint64 count, int32 x 3 each). A PcaModel is mean (Eigen VectorXf), orthonormal basis (MatrixXf,
column-major), eigenvalues (VectorXf), triangles (uint64 count, int32 x 3 each); an Eigen matrix is
int32 rows, int32 cols, float32 data. A blendshape is a string name (uint64 length + bytes) and a
VectorXf. Units mm (SFM).
"""
import struct

import numpy as np

from ...errors import InputError
from .common import build_model, colour_to_unit, single_file, to_vertices


class _Reader:
    def __init__(self, data, path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n):
        if self.pos + n > len(self.data):
            raise InputError(f"{self.path} ends early: not an eos model file (or a truncated one)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def scalar(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def eigen(self):
        rows, cols = self.scalar("i"), self.scalar("i")
        if rows < 0 or cols < 0:
            raise InputError(f"{self.path}: negative matrix size: not an eos model file")
        a = np.frombuffer(self.take(4 * rows * cols), "<f4")
        return a.reshape(cols, rows).T.astype(np.float64)  # column-major

    def triangles(self):
        n = self.scalar("Q")
        return np.frombuffer(self.take(12 * n), "<i4").reshape(n, 3).astype(np.int64)

    def string(self):
        return self.take(self.scalar("Q")).decode("utf-8")

    def pca(self):
        mean = self.eigen().ravel()
        basis = self.eigen()
        ev = self.eigen().ravel()
        tri = self.triangles()
        return mean, basis * np.sqrt(np.maximum(ev, 0))[None, :], tri


def find_root(path):
    return single_file(path, (".bin",), "eos/SFM .bin")


def load(root, spec, name="sfm"):
    path = find_root(root)
    r = _Reader(path.read_bytes(), path)
    version = r.scalar("I")
    if not 1 <= version <= 4:
        raise InputError(f"{path}: unknown eos model version {version} (expected 1 to 4)")
    mean, basis, tri = r.pca()
    cmean, cbasis, _ = r.pca()
    exp, exp_kind, names = None, "pca", []
    if version >= 2 and r.scalar("B") == 0:  # 'nullopt' flag false: an expression model follows
        kind = r.scalar("i")
        if kind == 0:
            emean, exp_flat, _ = r.pca()
            mean = mean + emean
            exp = to_vertices(exp_flat)
        elif kind == 1:
            shapes = []
            for _ in range(r.scalar("Q")):
                names.append(r.string())
                shapes.append(r.eigen().ravel())
            exp = np.stack([s.reshape(-1, 3) for s in shapes]) if shapes else None
            exp_kind = "blendshape"
        else:
            raise InputError(f"{path}: unknown expression model type {kind}")
    landmarks = {}
    if version >= 3 and r.scalar("B") == 0:
        for _ in range(r.scalar("Q")):
            key = r.string()
            landmarks[key] = r.scalar("i")
    uv = np.frombuffer(r.take(16 * r.scalar("Q")), "<f8").reshape(-1, 2).copy()
    uv_faces = r.triangles().astype(np.int32) if version >= 4 else None
    if uv_faces is not None and len(uv_faces) == 0:
        uv_faces = None
    if len(uv) and uv_faces is None and len(uv) == len(mean) // 3:
        uv_faces = tri.astype(np.int32)
    model = build_model(name, to_vertices(mean), tri, to_vertices(basis), exp, exp_kind,
                        colour_to_unit(to_vertices(cmean)) if cmean.size else None,
                        to_vertices(cbasis) if cmean.size else None, units=None,
                        metadata={"title": "eos / Surrey Face Model", "eos_version": version,
                                  "eos_landmarks": landmarks},
                        uv=uv if len(uv) else None, uv_faces=uv_faces if len(uv) else None)
    if names:
        model.expression_names = names
    return model
