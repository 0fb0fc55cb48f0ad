"""Model store and `facefit model install`: clean failures that leave nothing half installed."""
import json
import os
import tarfile

import pytest
from click.testing import CliRunner

from cli.main import cli
from conftest import ICT_ARCHIVE, need
from fitter.errors import InputError, ModelInstallError, ModelNotInstalledError
from fitter.install import installer
from fitter.model import store
from fitter.registry import spec


def no_leftovers(home):
    d = home / "models"
    return not d.exists() or not any(p.name.startswith(".install-") for p in d.iterdir())


def test_registry_pins_every_official_file():
    s = spec("ict")
    files = [k for k in s["sha256"] if k.startswith("FaceXModel/")]
    assert len([f for f in files if f.startswith("FaceXModel/identity")]) == 100
    assert "FaceXModel/generic_neutral_mesh.obj" in files and "LICENSE" in s["sha256"]
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in s["sha256"].values())
    assert s["license"] == "MIT" and s["url"].startswith("https://github.com/ICT-VGL/ICT-FaceKit/")


def test_corrupt_archive_fails_cleanly(tmp_path, tmp_home):
    bad = tmp_path / "ICT-FaceKit.tar.xz"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(ModelInstallError, match="not a readable archive"):
        installer.install("ict", bad, progress=False, log=lambda *a: None)
    assert store.installed() == [] and no_leftovers(tmp_home)


def test_wrong_files_fail_checksum(tmp_path, tmp_home):
    fx = tmp_path / "src" / "FaceXModel"
    fx.mkdir(parents=True)
    (fx / "generic_neutral_mesh.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    archive = tmp_path / "fake.tar.xz"
    with tarfile.open(archive, "w:xz") as t:
        t.add(tmp_path / "src", arcname="ICT-FaceKit")
    with pytest.raises(ModelInstallError, match="missing|does not match"):
        installer.install("ict", archive, progress=False, log=lambda *a: None)
    assert store.installed() == [] and no_leftovers(tmp_home)


def test_unsafe_zip_is_refused(tmp_path, tmp_home):
    import zipfile

    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("../escape.txt", "x")
    with pytest.raises(ModelInstallError, match="unsafe path"):
        installer.install("ict", z, progress=False, log=lambda *a: None)
    assert not (tmp_path / "escape.txt").exists()


def test_missing_model_and_unknown_format(tmp_home):
    with pytest.raises(ModelNotInstalledError, match="facefit model install ict"):
        store.load_model("ict")
    with pytest.raises(InputError, match="--format"):
        installer.install("mymodel", "/nonexistent.h5", progress=False)


def test_cli_error_paths_are_one_line(tmp_home, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["model", "install", "ict", "--from", str(tmp_path / "nope.tar.xz")])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "does not exist" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["model", "info", "ict"])
    assert r.exit_code == 2 and "not installed" in r.output
    r = runner.invoke(cli, ["model", "show", "ict", "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "not installed" in r.output and not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_full_install_from_shared_archive_and_corrupted_copy(tmp_path, tmp_home):
    """The whole install (checksums, import, embedding) from the shared archive; then one flipped
    byte in one identity file must fail the install and leave the good copy in place."""
    need(ICT_ARCHIVE, "the ICT-FaceKit archive")
    r = CliRunner().invoke(cli, ["model", "install", "ict", "--from", str(ICT_ARCHIVE), "--quiet"])
    assert r.exit_code == 0, r.output
    info = json.loads(CliRunner().invoke(cli, ["model", "info", "ict", "--json"]).output)
    assert info["n_identity"] == 100 and info["n_expression"] == 53 and info["units"] == "mm"
    assert info["landmark_embedding"]["reference_68"]["inner51_median_mm"] <= 4.0
    src = tmp_path / "copy"
    with tarfile.open(ICT_ARCHIVE) as t:
        t.extractall(src, filter="data")
    f = next(src.rglob("identity042.obj"))
    data = bytearray(f.read_bytes())
    data[1000] ^= 1
    f.write_bytes(bytes(data))
    before = store.sha256_file(store.model_dir("ict") / "model.npz")
    with pytest.raises(ModelInstallError, match="identity042.obj does not match"):
        installer.install("ict", src, progress=False, log=lambda *a: None)
    assert store.sha256_file(store.model_dir("ict") / "model.npz") == before and no_leftovers(tmp_home)


def test_download_path_over_loopback(tmp_path, tmp_home):
    """`install` with a URL downloads, extracts and verifies: a zip that is not the official files is
    refused by the checksums, and an unreachable URL is a one-line error."""
    import http.server
    import threading
    import zipfile

    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    with zipfile.ZipFile(srv_dir / "da5f95a.zip", "w") as z:
        z.writestr("ICT-FaceKit-da5f95a/FaceXModel/generic_neutral_mesh.obj", "v 0 0 0\nf 1 1 1\n")
        z.writestr("ICT-FaceKit-da5f95a/LICENSE", "MIT")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(srv_dir), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/da5f95a.zip"
        with pytest.raises(ModelInstallError, match="missing|does not match"):
            installer.install("ict", url, progress=False, log=lambda *a: None)
        with pytest.raises(ModelInstallError, match="cannot download"):
            installer.install("ict", url.replace("da5f95a", "nothere"), progress=False, log=lambda *a: None)
    finally:
        httpd.shutdown()
    assert store.installed() == [] and no_leftovers(tmp_home)
