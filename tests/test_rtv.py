"""Relative Total Variation: structure keeps edges, texture takes the fine repeated pattern."""
import numpy as np
from scipy.ndimage import gaussian_filter

from fitter.geometry.rtv import rtv_structure


def _step_with_stripes(H=96, W=96):
    x = np.arange(W)
    base = np.where(x < W // 2, 0.3, 0.7)[None, :].repeat(H, 0)
    stripes = 0.08 * np.sign(np.sin(2 * np.pi * (x + 0.5) / 4))[None, :].repeat(H, 0)  # period 4 px
    return base, stripes


def _edge_width(row, W):
    lo, hi = row[W // 2 - 18:W // 2 - 8].mean(), row[W // 2 + 8:W // 2 + 18].mean()
    r = (row[W // 2 - 18:W // 2 + 18] - lo) / (hi - lo)
    return int(np.sum((r > 0.1) & (r < 0.9)))


def test_rtv_separates_texture_from_edges():
    base, stripes = _step_with_stripes()
    image = base + stripes
    S = rtv_structure(image, lam=0.01)
    flat = S[:, 8:40]
    assert np.std(flat - flat.mean(1, keepdims=True)) < 0.05 * np.std(stripes)  # the stripes are gone
    assert abs((S[:, 56:88].mean() - flat.mean()) - 0.4) < 0.02  # the step's contrast is kept
    assert _edge_width(S[48], 96) <= 1  # and it stays sharp
    np.testing.assert_allclose((image - S)[:, 8:40], stripes[:, 8:40], atol=0.01)  # texture layer = stripes
    # a Gaussian blur that removes the stripes as well smears the edge over several pixels
    B = gaussian_filter(image, 2.0)
    assert np.std(B[:, 8:40] - B[:, 8:40].mean(1, keepdims=True)) < 0.05 * np.std(stripes)
    assert _edge_width(B[48], 96) >= 4


def test_rtv_colour_channels_share_the_structure():
    base, stripes = _step_with_stripes(48, 64)
    image = np.stack([base + stripes, 0.5 * base + stripes, 0.2 + 0 * base], axis=-1)
    S = rtv_structure(image, lam=0.01)
    assert S.shape == image.shape
    np.testing.assert_allclose(S[..., 2], 0.2, atol=1e-6)  # a flat channel stays flat
    assert np.std(S[:, 4:24, 0] - S[:, 4:24, 0].mean(1, keepdims=True)) < 0.01
