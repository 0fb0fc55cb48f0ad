"""Benchmarks measured by `facefit bench ...` (cli/bench.py); results are recorded in BENCHMARKS.md with
the command that made them. One module per stage; the peers (eos, libigl, trimesh, open3d's ray caster)
are imported here only, never by the library. Imports: any layer of the library; nothing in the library
imports it.

| module | command | what |
|---|---|---|
| `fitter.bench.foundation` | `facefit bench foundation` | renderer vs open3d, visibility, detection, install |
| `fitter.bench.coarse` | `facefit bench coarse` | coarse fit on synthetic truth and scan renders, eos peer |
| `fitter.bench.medium` | `facefit bench medium` | Laplacian solve vs scipy/libigl, coarse vs medium |
| `fitter.bench.register` | `facefit bench register` | NICP vs T-ICP on synthetic RGB-D, scans, trimesh peer |
| `fitter.bench.fine` | `facefit bench fine` | detail recovery on synthetic wrinkles, medium vs fine on scans |
| `fitter.bench.common` | | timing, seeds and poses, error measures, the real scans and their renders |
| `fitter.bench.synthetic` | | synthetic faces with exact truth (renders, detail, lighting) for the benchmarks and tests |
| `fitter.bench.micc_mini` | | the MICC-layout mini dataset of filmed scans |
"""
from .coarse import coarse, scans, summarise_coarse
from .fine import fine_scans, fine_synthetic, summarise_fine
from .foundation import foundation
from .medium import medium_speed, medium_synthetic
from .register import register_scans, register_synthetic

__all__ = ["coarse", "fine_scans", "fine_synthetic", "foundation", "medium_speed", "medium_synthetic",
           "register_scans", "register_synthetic", "scans", "summarise_coarse", "summarise_fine"]
