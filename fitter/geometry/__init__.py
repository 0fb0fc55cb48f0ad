"""Geometry and images, shared by every stage: what a newcomer looks for first when a result is drawn
or solved.

| module | owns |
|---|---|
| `mesh` | triangle meshes: OBJ reading and writing, normals, tangent frames, adjacency, submeshes, the one Laplacian |
| `camera` | the pinhole camera (OpenCV convention), look-at poses, crops, yaw of a rotation |
| `render` | the one renderer: headless GLSL (depth, triangle-index and barycentric maps, colour, visibility) |
| `cholesky` | the one sparse Cholesky (CHOLMOD) with its analysis cached and the factor reused |
| `closest` | the one closest-point-on-mesh routine |
| `align` | rigid and similarity alignment of point sets (Umeyama) |
| `least_squares` | the one Levenberg–Marquardt loop and its damping schedule, the SO(3) exponential, the projection's pose Jacobian and Cauchy weights, shared by the landmark fit and the bundle adjustment |
| `rtv` | relative total variation smoothing of an image (a sparse solve) |
| `draw` | text, points and contact sheets drawn into images |

Imports: the foundation (`fitter.errors`, `fitter.io`) and third-party libraries only; nothing above it.
"""
