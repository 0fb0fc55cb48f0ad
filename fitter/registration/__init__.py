"""Registering the model to depth and scans (`facefit register`), and scoring a mesh against a scan.

| module | owns |
|---|---|
| `scan` | reading a scan (OBJ, PLY, VTK, glTF; point clouds meshed), its face frame, its virtual view |
| `nicp` | optimal-step non-rigid ICP with the colour term (T-ICP), solved with CHOLMOD |
| `register` | `register_rgbd`, `register_scan`: coarse fit, lift onto the depth, T-ICP, the similarity/S_morph split |
| `capture` | a capture (RGB-D pair or scan) found in a folder, registered, read back as a `RegisteredCapture` |
| `evaluate` | the MICC protocol (crop, similarity ICP, scan-to-mesh distance) and the NME of S1 |

Imports: `fitter.photo` (the registration starts with the coarse fit) and everything below it.
"""
