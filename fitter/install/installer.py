"""Installing a model into the store (fitter.model.store): from a folder, an archive or a URL (the registry's
by default), its files checked against the registry's checksums, imported by its format's importer
(fitter.model.formats), saved, and its landmark embedding derived (fitter.install.embedding_build). Everything is
staged in a temporary folder beside the target and renamed into place, so a failed install leaves
nothing and keeps any previously installed copy.
"""
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError, ModelInstallError
from ..io import write_json_atomic
from ..model import formats
from ..model.morphable import MODEL_META
from ..model.store import DEFAULT_MODEL, model_dir, models_dir, sha256_file
from .embedding_build import build_and_store_embedding


# --- sources -----------------------------------------------------------------------------------
def _download(url, dest: Path, progress=True):
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with open(dest, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                             disable=not (progress and sys.stderr.isatty()),
                                             desc=f"downloading {url.rsplit('/', 1)[-1]}") as bar:
                while block := r.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except OSError as e:
        raise ModelInstallError(f"cannot download {url}: {getattr(e, 'reason', e)}; "
                                f"download it yourself and use --from FILE") from None


def _extract(archive: Path, dest: Path):
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    if m.startswith("/") or ".." in Path(m).parts:
                        raise ModelInstallError(f"{archive} has an unsafe path '{m}'")
                z.extractall(dest)
        elif name.endswith((".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar", ".tar.bz2")):
            with tarfile.open(archive) as t:
                if hasattr(tarfile, "data_filter"):
                    t.extractall(dest, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    for m in t.getmembers():
                        if m.name.startswith("/") or ".." in Path(m.name).parts:
                            raise ModelInstallError(f"{archive} has an unsafe path '{m.name}'")
                    t.extractall(dest)
        else:
            raise ModelInstallError(f"{archive}: unknown archive type (use a folder, .zip or .tar.xz)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, ModelInstallError):
            raise
        raise ModelInstallError(f"{archive} is not a readable archive ({e.__class__.__name__}: {e})") from None


def _is_archive(p: Path):
    return p.name.lower().endswith((".zip", ".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar", ".tar.bz2"))


def verify_checksums(root: Path, expected: dict, required_prefixes=("FaceXModel/", "LICENSE")):
    """Check the sha256 of each expected file under `root`; raise ModelInstallError naming the first bad one."""
    for rel, digest in sorted(expected.items()):
        if not rel.startswith(required_prefixes):
            continue
        p = root / rel
        if not p.is_file():
            raise ModelInstallError(f"{rel} is missing from {root}: not the official files")
        if sha256_file(p) != digest:
            raise ModelInstallError(f"{rel} does not match its pinned sha256: corrupt or not the official files")


# --- install -----------------------------------------------------------------------------------
def install(name=DEFAULT_MODEL, source=None, fmt=None, progress=True, build_embedding=True, seed=0,
            log=print):
    """Install model `name` from `source` (folder, archive or URL; default: the registry's URL).

    Returns the installed model's folder. Raises ModelInstallError / InputError with a one-line reason,
    leaving any previously installed copy untouched.
    """
    from ..registry import spec as registry_spec

    spec = registry_spec(name)
    fmt, source = _install_format_and_source(name, spec, fmt, source)
    t0 = time.perf_counter()
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".install-", dir=models_dir()) as tmp:
        tmp = Path(tmp)
        src = str(source)
        root, src_path = _unpack_source(src, tmp, progress, log)
        model, checksums_verified, importer, root = _import_model(name, spec, fmt, root, src_path, log)
        model.metadata.update(
            format=fmt, source=src if src.startswith("http") else str(Path(src).resolve()),
            installed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            checksums_verified=checksums_verified)
        stage = tmp / "model"
        stage.mkdir()
        model.save(stage)
        lic = importer.license_file(root) if hasattr(importer, "license_file") else None
        if lic is not None:
            shutil.copyfile(lic, stage / "LICENSE")
        if build_embedding:
            build_and_store_embedding(model, stage, seed=seed, progress=progress, log=log)
        info = json.loads((stage / MODEL_META).read_text())
        info["model_sha256"] = sha256_file(stage / "model.npz")
        info["install_seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(stage / MODEL_META, info)
        target = model_dir(name)
        old = tmp / "old"
        if target.exists():
            os.replace(target, old)
        os.replace(stage, target)
    return target


def _install_format_and_source(name, spec, fmt, source):
    """The importer name and the source to install from (the registry's URL by default)."""
    fmt = fmt or (spec or {}).get("format")
    if fmt is None:
        raise InputError(f"model '{name}' is not in the registry: give its file with --from and its --format "
                         f"({', '.join(formats.IMPORTERS)})")
    if fmt not in formats.IMPORTERS:
        raise InputError(f"unknown format '{fmt}' (known: {', '.join(formats.IMPORTERS)})")
    if source is None:
        if not spec or not spec.get("url"):
            raise InputError(f"model '{name}' has no download URL: give its files with --from")
        source = spec["url"]
    return fmt, source


def _unpack_source(src, tmp: Path, progress, log):
    """(root of the model's files, the local source path): a download lands in `tmp`, an archive is
    extracted there, a folder or a single model file is used where it is."""
    if src.startswith(("http://", "https://")):
        archive = tmp / src.rsplit("/", 1)[-1]
        _download(src, archive, progress)
        src_path = archive
    else:
        src_path = Path(src).expanduser()
        if not src_path.exists():
            raise InputError(f"{src_path} does not exist")
    if src_path.is_dir():
        return src_path, src_path
    if _is_archive(src_path):
        root = tmp / "extracted"
        root.mkdir()
        log(f"extracting {src_path.name} ...")
        _extract(src_path, root)
        return root, src_path
    return src_path, src_path  # a single model file (BFM .mat/.h5, FLAME .pkl/.npz, SFM .bin)


def _import_model(name, spec, fmt, root, src_path, log):
    """(model, checksums verified, importer, root): the registry's checksums checked when it has them,
    then the files imported."""
    importer = formats.IMPORTERS[fmt]
    checksums_verified = False
    if spec and spec.get("sha256"):
        root = importer.find_root(root)
        log("verifying checksums ...")
        verify_checksums(root, spec["sha256"])
        checksums_verified = True
    log(f"importing {fmt} model ...")
    try:
        model = importer.load(root, spec or {"name": name}, name=name)
    except (InputError, ModelInstallError):
        raise
    except (KeyError, ValueError, IndexError, OSError) as e:
        raise ModelInstallError(f"{src_path} is not a valid {fmt} model ({e.__class__.__name__}: {e})") from None
    model.name = name
    return model, checksums_verified, importer, root
