"""Out-of-plane pose augmentation of registered captures (S1 §3.2), under way: the whole image's depth
from anchors (S1 Eq. 8, fitter.augment.anchors) and the mesh of the whole image — the registered face
area plus the triangulated anchors — rendered at a new head pose with the source's colours
(fitter.augment.image_mesh), what the source never saw filled (the face from its albedo under the fitted
light, Poisson-blended; background inpainted). To come: samples and their labels, `facefit augment` and
`facefit dataset build`, the measurements."""
