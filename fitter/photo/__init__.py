"""Single-photo reconstruction: the stages and the pipeline that runs them (`facefit fit`).

| module | owns |
|---|---|
| `coarse` | the landmark fit: pose, focal, identity and expressions, one or several images of one person |
| `medium` | Laplacian deformation of the face area towards the landmarks (CHOLMOD) |
| `fine/` | shape from shading on the face crop, solved with Ceres |
| `texture` | lighting (SH, Phong), per-vertex albedo, UV textures, image sampling, luminance |
| `overlay` | the fitted face drawn over the photo |
| `export` | meshes with their texture as OBJ, glTF binary and PLY |
| `preview` | the preview panel and the model preview |
| `pipeline` | `fit_photo` and `write_result`: detection, the stages in order, the outputs |

Each stage is a pure function `stage(prepared, ...)` that takes the prepared model (`fitter.prepared`) as
its first argument without importing it. Imports: `fitter.model`, `fitter.detection`, `fitter.geometry`
and the foundation.
"""
