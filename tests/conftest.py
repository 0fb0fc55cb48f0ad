"""Shared fixtures. Real data and the model come from ../shared (never copied into the repo);
tests that need them skip with the reason when they are absent."""
import os
from pathlib import Path

import numpy as np
import pytest

from fitter.geometry.mesh import subdivide_midpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEFIT_SHARED", REPO.parent / "shared"))
ICT_ARCHIVE = SHARED / "models" / "ICT-FaceKit.tar.xz"
PHOTOS = SHARED / "data" / "photos"


def need(path: Path, what: str):
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (the shared data folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def ict_model(tmp_path_factory):
    """The installed ICT model: the user's store when it has one (make setup installs it), otherwise
    installed from the shared archive into a temporary store for this test session."""
    from fitter.model import store

    if "ict" in store.installed():
        return store.load_model("ict")
    need(ICT_ARCHIVE, "the ICT-FaceKit archive")
    home = tmp_path_factory.mktemp("facefit_home")
    old = os.environ.get("FACEFIT_HOME")
    os.environ["FACEFIT_HOME"] = str(home)
    try:
        from fitter.install import installer

        installer.install("ict", ICT_ARCHIVE, progress=False, log=lambda *a: None)
        return store.load_model("ict")
    finally:
        if old is None:
            os.environ.pop("FACEFIT_HOME", None)
        else:
            os.environ["FACEFIT_HOME"] = old


@pytest.fixture(scope="session")
def ict_prepared(ict_model):
    """The ICT model prepared once for the session (what the stages take)."""
    from fitter.prepared import PreparedModel

    return PreparedModel(ict_model)


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """An empty model store for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("FACEFIT_HOME", str(home))
    return home


def grid_mesh(n, size, z):
    """(n*n, 3) planar grid at depth z spanning [-size/2, size/2]^2, and its triangles."""
    xs = np.linspace(-size / 2, size / 2, n)
    X, Y = np.meshgrid(xs, xs)
    V = np.stack([X.ravel(), Y.ravel(), np.full(n * n, float(z))], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    F = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int32)
    return V, F


def icosphere(subdivisions, radius=1.0, center=(0, 0, 0)):
    """Icosphere (V, F) by midpoint subdivision (fitter.geometry.mesh), vertices projected onto the sphere."""
    t = (1 + 5 ** 0.5) / 2
    V = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    F = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(subdivisions):
        V, F, _ = subdivide_midpoint(V, F)
    V = V / np.linalg.norm(V, axis=1, keepdims=True) * radius + np.asarray(center, float)
    return V, F.astype(np.int32)


MINI_MICC_SECONDS, MINI_MICC_FPS = 2.0, 25.0


@pytest.fixture(scope="session")
def mini_micc(ict_prepared, tmp_path_factory):
    """A MICC-layout mini dataset (fitter.bench.micc_mini): Fran's textured scan and a synthetic ICT
    identity filmed as 2-second turning-head MJPEG videos in the three settings, a subject without scans
    and one with a corrupt video. Returns (root, truth)."""
    from fitter.bench.micc_mini import build_mini_micc

    need(SHARED / "data" / "scan-fran" / "fran_cut.vtk", "Fran's scan")
    root = tmp_path_factory.mktemp("mini_micc")
    truth = build_mini_micc(root, ict_prepared, SHARED / "data", seconds=MINI_MICC_SECONDS, fps=MINI_MICC_FPS,
                            scans=("scan-fran",), skin=(), log=lambda *a: None)
    return root, truth
