"""Out-of-plane pose augmentation of registered captures (S1 §3.2). So far: the background depth by
anchors (S1 Eq. 8, fitter.augment.anchors)."""
