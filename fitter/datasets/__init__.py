"""Dataset readers and their evaluation protocols (MICC Florence: fitter.datasets.micc)."""
