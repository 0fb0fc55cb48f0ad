"""Out-of-plane pose augmentation of registered captures (S1 §3.2): the whole image's depth from anchors
(S1 Eq. 8, `anchors`), the mesh of the whole image — the registered face area plus the triangulated anchors —
turned about the face centre and rendered with the source's colours (`image_mesh`), one sample with what
the source never saw filled and its exact labels (`sample`), and the dataset files, the quality
thresholds and `facefit dataset build` (`dataset`).

Imports: `fitter.batch` (the dataset build) and the layers below it: `fitter.registration` (registered
captures), `fitter.photo` (texture), `fitter.geometry`, `fitter.detection`, `fitter.model`, the foundation."""
