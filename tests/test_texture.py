"""Texture and illumination: the spherical-harmonic lighting fit."""
import numpy as np

from conftest import icosphere


def test_sh_lighting_fit_recovers_known_coefficients():
    """The 9-coefficient SH fit (used by texture and by the fine stage) recovers the light that shaded a
    sphere with a varied albedo, from its colours and normals, to the ridge's small bias."""
    from fitter.photo.texture import fit_sh_lighting, sh_basis

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


def test_phong_fit_recovers_a_light_in_range_and_stays_in_range_without_specular():
    """A sphere shaded by a known in-range Phong light: the light is recovered. Colours no physical light
    makes (darker where the surface faces the light: a negative diffuse gain, which the unconstrained
    fit returns): the fit stays in range."""
    from fitter.photo.texture import PhongLight, fit_phong, phong_in_bounds, phong_shade

    V, _ = icosphere(4)
    n = V / np.linalg.norm(V, axis=1, keepdims=True)
    front = n[:, 2] < -0.05                      # the half the camera (looking along +z) sees
    n = n[front]
    view = np.tile([0.0, 0.0, -1.0], (len(n), 1))
    albedo = np.full((len(n), 3), 0.7)
    d = np.array([0.3, -0.4, -0.866])
    true = PhongLight(d / np.linalg.norm(d), np.array([0.3, 0.3, 0.3]), np.array([0.6, 0.55, 0.5]), 0.2, 20.0)
    light, rms = fit_phong(albedo, n, view, phong_shade(albedo, n, view, true))
    assert rms < 1e-3 and np.allclose(light.direction, true.direction, atol=0.02)
    assert abs(light.shininess - 20.0) < 2.0 and phong_in_bounds(light)
    impossible = PhongLight(true.direction, np.array([0.8, 0.8, 0.8]), np.array([-0.3, -0.3, -0.3]), 0.0, 20.0)
    light, _ = fit_phong(albedo, n, view, phong_shade(albedo, n, view, impossible))
    assert phong_in_bounds(light) and light.diffuse.min() >= 0


def test_phong_light_of_every_real_photo_is_in_range(ict_prepared):
    """The fitted Phong parameters of every face in ../shared/data/photos lie in their physical ranges
    (before the bounds: shininess up to 9e27, a light behind the head, negative diffuse terms)."""
    from conftest import PHOTOS, need
    from fitter.photo.pipeline import fit_photo
    from fitter.photo.texture import phong_in_bounds

    photos = sorted(p for p in need(PHOTOS, "photos").iterdir() if p.suffix in (".jpg", ".png"))
    faces = [r for p in photos for r in fit_photo(p, ict_prepared, ("coarse",), all_faces=True, texture_size=64)]
    assert len(faces) >= len(photos)
    for r in faces:
        assert r.texture is not None and phong_in_bounds(r.texture.phong), (r.image_path, r.texture.phong.to_dict())
