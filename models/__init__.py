"""Model registry: what each supported face model is and where it comes from.

One JSON file per model (`<name>.json`): title, format (the importer in fitter.model.formats), licence,
download URL at a pinned commit, sha256 of each official file, source units, vertex regions and
which parts are rendered / scored. Models without a spec here (BFM, FLAME, SFM) are installed from
a user's own file with `facefit model install NAME --from FILE --format FORMAT`.
"""
import json
from importlib import resources


def available():
    """Names of the models with a registry spec."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def spec(name):
    """The registry spec of model `name` as a dict, or None when the registry has none."""
    f = resources.files(__name__) / f"{name}.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text())
