"""The model store: installed models under $FACEFIT_HOME/models/<name>/ (default ~/.cache/facefit):
where they live, which are installed, loading one. Installing is fitter.install.installer's.

Each installed model folder holds model.npz + model.json (fitter.model.morphable), landmarks.npz (the
landmark embedding, fitter.model.embedding) and the model's licence.
"""
import hashlib
import json
import os
from pathlib import Path

from ..errors import ModelNotInstalledError
from .morphable import MODEL_META, MorphableModel

DEFAULT_MODEL = "ict"


def home() -> Path:
    return Path(os.environ.get("FACEFIT_HOME") or Path.home() / ".cache" / "facefit")


def models_dir() -> Path:
    return home() / "models"


def model_dir(name) -> Path:
    return models_dir() / name


def installed():
    """Names of installed models."""
    d = models_dir()
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / MODEL_META).is_file() and not p.name.startswith("."))


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_installed(name=DEFAULT_MODEL) -> Path:
    """The folder of installed model `name`. Raises ModelNotInstalledError saying how to install it."""
    d = model_dir(name)
    if not (d / MODEL_META).is_file():
        hint = f"facefit model install {name}" + ("" if name == DEFAULT_MODEL else " --from FILE --format FORMAT")
        raise ModelNotInstalledError(f"model '{name}' is not installed in {models_dir()}; run '{hint}'")
    return d


def load_model(name=DEFAULT_MODEL) -> MorphableModel:
    """Load an installed model (with its landmark embedding when it has one)."""
    d = require_installed(name)
    model = MorphableModel.load(d)
    model.metadata["folder"] = str(d)
    return model


def model_info(name):
    """The installed model's metadata (model.json) as a dict."""
    d = model_dir(name)
    try:
        return json.loads((d / MODEL_META).read_text())
    except FileNotFoundError:
        raise ModelNotInstalledError(f"model '{name}' is not installed; run 'facefit model install {name}'") from None
