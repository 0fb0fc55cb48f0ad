"""Importers of face-model files into fitter.model.morphable.MorphableModel (all output in mm).

Each importer module exposes `find_root(path)` (where its files are), `load(root, spec, name)`, and
optionally `license_file(root)`. IMPORTERS maps the --format names to them.
"""
from . import bfm2009, bfm2017, flame, ict, sfm

IMPORTERS = {"ict": ict, "bfm2009": bfm2009, "bfm2017": bfm2017, "flame": flame, "sfm": sfm}
