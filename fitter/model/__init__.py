"""The face model and the tables derived from it once, at install time.

| module | owns |
|---|---|
| `morphable` | `MorphableModel`: mean, identity and expression bases, faces, UVs, regions, units (mm) |
| `formats/` | importers of model files (ICT, BFM 2009/2017, FLAME, eos/SFM) into a `MorphableModel` |
| `store` | where installed models live, which are installed, loading one |
| `embedding` | the MediaPipe → model landmark embedding (barycentric points on the surface) |
| `painting` | the painted face: part labels and albedo per vertex, for renders with known truth |
| `face_area` | the face-area submesh, its landmark vertices, how its displacement extends to the model |
| `detector_bias` | the detector's measured bias: renders of a fit seen by the detector again |

Imports: `fitter.geometry`, `fitter.detection` and the foundation. Installing a model (which builds its
embedding on renders) is `fitter.install`, one layer up; the stages' once-per-model state is
`fitter.prepared`.
"""
