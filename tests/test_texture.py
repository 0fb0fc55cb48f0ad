"""Texture and illumination: the spherical-harmonic lighting fit."""
import numpy as np

from conftest import icosphere


def test_sh_lighting_fit_recovers_known_coefficients():
    """The 9-coefficient SH fit (used by texture and by the fine stage) recovers the light that shaded a
    sphere with a varied albedo, from its colours and normals, to the ridge's small bias."""
    from fitter.texture import fit_sh_lighting, sh_basis

    V, F = icosphere(4)
    normals = V / np.linalg.norm(V, axis=1, keepdims=True)
    rng = np.random.default_rng(2)
    L_true = np.zeros((9, 3))
    L_true[0] = [2.0, 1.8, 1.6]
    L_true[1:4] = rng.normal(0, 0.5, (3, 3))
    L_true[4:] = rng.normal(0, 0.15, (5, 3))
    albedo = np.clip(0.6 + 0.2 * rng.standard_normal((len(V), 3)), 0.2, 1.0)
    colors = albedo * (sh_basis(normals) @ L_true)
    L = fit_sh_lighting(normals, colors, albedo, ridge=1e-8)
    np.testing.assert_allclose(L, L_true, atol=1e-5)
    noisy = colors + rng.normal(0, 0.01, colors.shape)
    assert np.abs(fit_sh_lighting(normals, noisy, albedo) - L_true).max() < 0.05
