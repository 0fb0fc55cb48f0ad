"""Out-of-plane augmentation (fitter.augment): the whole image's depth from anchors (S1 Eq. 8)."""
import numpy as np
import pytest

from fitter.augment.anchors import AnchorMesh, anchor_depths, complete_depth, grid_anchors, interpolate_depth
from fitter.errors import InputError


def _plane_with_hole(rng, H=240, W=320):
    y, x = np.mgrid[0:H, 0:W].astype(float)
    truth = 800 + 0.3 * x - 0.2 * y
    obs = truth + rng.normal(0, 0.5, truth.shape)
    hole = (x - 170) ** 2 + (y - 110) ** 2 < 50 ** 2
    obs[hole] = 0
    obs[rng.random(obs.shape) < 0.05] = np.nan  # scattered dropouts, NaN as well as 0 is missing
    return truth, obs, hole


def test_eq8_fills_a_hole_in_a_plane():
    truth, obs, hole = _plane_with_hole(np.random.default_rng(0))
    dense, mesh, d = complete_depth(obs, spacing_px=16)
    assert dense.shape == truth.shape and (dense > 0).all()  # the triangulation covers every pixel
    err = np.abs(dense - truth)
    assert np.median(err[hole]) < 0.6 and err[hole].max() < 3.0  # mm, a 100-pixel hole in a tilted plane
    assert np.median(err[~hole]) < 0.3                          # the observed part is followed
    again, mesh2, d2 = complete_depth(obs, mesh=mesh)           # the same mesh and analysis reused
    assert mesh2 is mesh and np.array_equal(d, d2) and mesh.factors.factorisations == 1


def test_anchor_interpolation_reproduces_anchor_values_and_linear_functions():
    mesh = AnchorMesh.of(grid_anchors(64, 48, 8))
    f = 3.0 + 0.5 * mesh.points[:, 0] - 0.25 * mesh.points[:, 1]
    dense = interpolate_depth(mesh, f, 64, 48)
    y, x = np.mgrid[0:48, 0:64].astype(float)
    assert np.abs(dense - (3.0 + 0.5 * x - 0.25 * y)).max() < 1e-3  # pixel centres map exactly


def test_eq8_needs_some_observed_depth():
    mesh = AnchorMesh.of(grid_anchors(32, 32, 8))
    with pytest.raises(InputError, match="no anchor"):
        anchor_depths(mesh, np.zeros((32, 32)))
    with pytest.raises(InputError, match="anchors"):
        AnchorMesh.of(np.zeros((2, 2)))
