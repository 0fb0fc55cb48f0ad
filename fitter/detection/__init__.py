"""The wrapped pretrained networks (MediaPipe), the only learnt parts of facefit.

| module | owns |
|---|---|
| `landmarks` | the 478-point face mesh detector, its landmark sets (68-point, contour, eyes, lips), the face detector's retry crop |
| `segment` | face parsing: the person mask and skin, brows, eyes, lips labels per pixel |

Imports: the foundation (`fitter.errors`, `fitter.io`) only.
"""
