"""Fine stage: shape from shading on the face crop (S2 §3.4), solved with Ceres.

| module | holds |
|---|---|
| `fitter.photo.fine.stage` | `FineConfig`, `FineResult`, `refine_depth` (the stage), the crop, the write-back onto the mesh, `detail_mesh` |
| `fitter.photo.fine.geometry` | normals of a depth map (rays from the crop's camera), the SH gradient, occlusion edges |
| `fitter.photo.fine.photometric` | SH lighting, region-average albedo, RTV albedo, specular layer, luminance |
| `fitter.photo.fine.ceres_tiles` | the depth objective (Eq. 9) as a Ceres problem: `DepthProblem` and its tile adapter |
"""
from ..texture import LUMA, luma
from .geometry import depth_discontinuities, depth_normals, forward_normals, sh_gradient
from .photometric import fit_albedo, fit_lighting, fit_specular, region_average_albedo
from .stage import FineConfig, FineResult, detail_mesh, displace_vertices, refine_depth, refined_region

__all__ = ["FineConfig", "FineResult", "LUMA", "depth_discontinuities", "depth_normals", "detail_mesh",
           "displace_vertices", "fit_albedo", "fit_lighting", "fit_specular", "forward_normals", "luma",
           "refine_depth", "refined_region", "region_average_albedo", "sh_gradient"]
