"""The `facefit` command line (click): a thin layer over the fitter library."""
