"""Multi-view reconstruction: videos and several photos of one person (`facefit video`, `facefit fit
--same-person`), split along its seams.

| step | modules |
|---|---|
| frames and their selection | `frames` (a video file or folder, with a stride), `selection` (following one person, frame scores, yaw bins) |
| the landmark joint fit | `joint` (one identity, per-view pose and expression; frames that do not belong dropped) |
| track finding | `tracks` (what the finders share: `Tracks`, the skin mask, lifting a pixel onto the mesh), `sift` (keypoints matched between views), `flow` (skin points followed through a video), `wide` (model-guided matches between photos far apart) |
| the bundle adjustment | `bundle` (identity, poses, expressions and a shared focal from the tracks; Levenberg–Marquardt) |
| the multi-view medium stage | `sweep` (photo-consistency along the normals; the Laplacian deformation towards it) |
| both refinements behind their gates | `refine` (`refine_views`) |
| reconstruction and outputs | `reconstruct` (`reconstruct_video`, `reconstruct_photos`, the batch task), `outputs` (`MultiViewResult`, the merged texture, the contact sheet, `write_multiview`) |

Imports: `fitter.photo` (the coarse fit, texture, overlay, export), `fitter.model`, `fitter.detection`,
`fitter.geometry` and the foundation; it takes the prepared model as an argument.
"""
from .outputs import MultiViewResult, write_multiview
from .reconstruct import reconstruct_photos, reconstruct_video

__all__ = ["MultiViewResult", "reconstruct_photos", "reconstruct_video", "write_multiview"]
