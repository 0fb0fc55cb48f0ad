"""Dataset readers and their evaluation protocols (MICC Florence: fitter.datasets.micc).

Imports: `fitter.video`, `fitter.registration` (the MICC protocol), `fitter.batch` and everything below
them."""
