"""The prepared model: a face model together with everything the stages derive from it once.

A `PreparedModel` is what a command (or a batch worker) loads once and hands to every stage for every
photo, capture or frame. It holds, each built on first use and then kept:

| attribute | what | built by | used by |
|---|---|---|---|
| `model` | the `MorphableModel` (mean, bases, faces, regions) | `fitter.model.store` | all |
| `embedding` | MediaPipe landmark → surface table (None if the model has none) | `fitter.model.embedding` | coarse, medium, register |
| `render_faces` | the triangles the renderer draws (no hidden inner parts) | `MorphableModel.render_faces` | overlays, fine, detector bias |
| `painted_parts`, `painted_albedo` | per-vertex part labels and albedo of the painted face | `fitter.model.painting` | T-ICP texture model, renders for the detector |
| `landmark_basis` | the model restricted to the 478 landmarks (per contour yaw bin) | `fitter.photo.coarse` | coarse, medium |
| `face_area` | face-area submesh, its landmark vertices, how its displacement extends to the model | `fitter.model.face_area` | medium, register |
| `laplacian_deformer` | per yaw bin constraints, anchors, the Laplacian system, CHOLMOD analysis and factors | `fitter.photo.medium` | medium |
| `nicp_topology(γ)` | T-ICP stiffness pattern and CHOLMOD analysis of the face area | `fitter.registration.nicp` | register |
| `mirror_pairs`, `albedo_system`, `uv_rasterisation` | texture tables | `fitter.photo.texture` | texture |

Building one costs nothing (everything is lazy), so a second one for the same model is cheap. Every
attribute is built under the object's lock and returned read-only, so one PreparedModel can be shared
by the threads of a process; the CHOLMOD factor caches inside it take their own lock.
"""
import threading

import numpy as np

from .errors import InputError
from .model.embedding import load_embedding
from .model.face_area import FaceArea
from .model.morphable import MorphableModel
from .model.painting import paint_albedo, painted_parts
from .model.store import load_model
from .photo.coarse import LandmarkBasis, warm_blas_controller
from .photo.medium import LaplacianDeformer
from .photo.texture import build_albedo_system, find_mirror_pairs, rasterise_uv
from .registration.nicp import NicpTopology

_UNSET = object()


class _BuiltOnce:
    """An attribute computed by `build(owner)` on first access, under the owner's lock, then kept in the
    instance's __dict__ (later reads do not come here)."""

    def __init__(self, build):
        self.build = build
        self.__doc__ = build.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        with obj._lock:
            if self.name not in obj.__dict__:
                obj.__dict__[self.name] = self.build(obj)
        return obj.__dict__[self.name]


def _read_only(a):
    a = np.asarray(a)
    a.setflags(write=False)
    return a


class PreparedModel:
    """A MorphableModel and its derived, shared state (see the module docstring)."""

    def __init__(self, model: MorphableModel, embedding=_UNSET):
        """embedding: a LandmarkEmbedding (or None) to use instead of the one stored with the model."""
        self.model = model
        self._lock = threading.RLock()
        if embedding is not _UNSET:
            self.__dict__["embedding"] = embedding
        self._mirror_pairs, self._albedo_systems, self._uv_rasters, self._nicp_topologies = {}, {}, {}, {}

    @staticmethod
    def load(name="ict"):
        """The installed model `name`, prepared."""
        return PreparedModel(load_model(name))

    @property
    def name(self):
        return self.model.name

    # --- landmarks ------------------------------------------------------------------------------
    @_BuiltOnce
    def embedding(self):
        """The LandmarkEmbedding stored with the installed model, or None."""
        return load_embedding(self.model)

    def require_embedding(self):
        """The embedding; InputError when the model has none (the landmark stages need it)."""
        if self.embedding is None:
            raise InputError(f"model '{self.model.name}' has no landmark embedding; reinstall it with "
                             f"'facefit model install'")
        return self.embedding

    @_BuiltOnce
    def landmark_basis(self):
        """fitter.photo.coarse.LandmarkBasis: mean and bases at the 478 landmarks (~0.8 s for ICT)."""
        basis = LandmarkBasis(self.model, self.require_embedding())
        warm_blas_controller()  # inspects the loaded BLAS libraries now, not inside the first fit
        return basis

    # --- geometry -------------------------------------------------------------------------------
    @_BuiltOnce
    def render_faces(self):
        """(M', 3) int32 triangles the renderer draws."""
        return _read_only(self.model.render_faces())

    @_BuiltOnce
    def front_faces(self):
        """(M'', 3) triangles of the front of the face (`MorphableModel.front_region`)."""
        return _read_only(self.model.faces_in(self.model.front_region()))

    @_BuiltOnce
    def render_triangle_ids(self):
        """(M',) index into model.faces of each of `render_faces` (e.g. for their UV triangles)."""
        m = self.model
        ids = np.flatnonzero(m.region_mask("render")[m.faces].all(axis=1)) if "render" in m.regions \
            else np.arange(len(m.faces))
        return _read_only(ids)

    @_BuiltOnce
    def face_area(self):
        """fitter.model.face_area.FaceArea: the face-area submesh and its landmark and carry tables."""
        return FaceArea(self.model, self.require_embedding())

    @_BuiltOnce
    def laplacian_deformer(self):
        """fitter.photo.medium.LaplacianDeformer: the face area's Laplacian system and tables (~2 s for ICT)."""
        return LaplacianDeformer(self)

    def nicp_topology(self, gamma):
        """fitter.registration.nicp topology (stiffness pattern, ordering, CHOLMOD analysis) of the face area."""
        key = float(gamma)
        with self._lock:
            if key not in self._nicp_topologies:
                area = self.face_area
                self._nicp_topologies[key] = NicpTopology(area.F_local, len(area.domain), key)
            return self._nicp_topologies[key]

    # --- painting -------------------------------------------------------------------------------
    @_BuiltOnce
    def painted_parts(self):
        """(N,) part label per vertex: 0 skin, 1 brows, 2 lips, 3 other parts (fitter.model.painting)."""
        return _read_only(painted_parts(self.model))

    @_BuiltOnce
    def painted_albedo(self):
        """(N, 3) albedo of the painted face (fitter.model.painting; 0.3 s for ICT)."""
        return _read_only(paint_albedo(self.model, self.painted_parts))

    # --- texture --------------------------------------------------------------------------------
    def mirror_pairs(self, region="face"):
        """(i, j) vertex pairs mirrored across x = 0 in `region` (fitter.photo.texture.find_mirror_pairs)."""
        with self._lock:
            if region not in self._mirror_pairs:
                self._mirror_pairs[region] = tuple(_read_only(a) for a in find_mirror_pairs(self.model, region))
            return self._mirror_pairs[region]

    def albedo_system(self, region, smooth, symmetry, prior):
        """Constant part of the albedo normal equations (fitter.photo.texture.build_albedo_system)."""
        key = (region, float(smooth), float(symmetry), float(prior))
        with self._lock:
            if key not in self._albedo_systems:
                self._albedo_systems[key] = build_albedo_system(self.model, self.mirror_pairs(region), *key)
            return self._albedo_systems[key]

    def uv_rasterisation(self, size):
        """(covered, triangle, barycentric) of a size² texture (fitter.photo.texture.rasterise_uv)."""
        with self._lock:
            if size not in self._uv_rasters:
                self._uv_rasters[size] = tuple(_read_only(a) for a in rasterise_uv(self.model, size))
            return self._uv_rasters[size]
