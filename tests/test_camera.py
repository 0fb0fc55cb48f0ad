"""The camera's intrinsic algebra (fitter.geometry.camera) and the one Levenberg–Marquardt loop
(fitter.geometry.least_squares), on problems whose answer is known."""
import numpy as np
import pytest

from fitter.geometry.camera import Camera, crop_matrix, focal_prior, image_centre, intrinsics, look_at_face
from fitter.geometry.least_squares import levenberg_marquardt


def _camera():
    K = np.array([[812.0, 0.0, 331.5], [0.0, 806.0, 244.0], [0.0, 0.0, 1.0]])  # fy ≠ fx, off-centre
    cam = look_at_face(np.zeros(3), 20.0, -10.0, 600.0, 800.0, 640, 480)
    return Camera(K, cam.R, cam.t, 640, 480)


def test_rays_back_project_what_project_projects():
    cam = _camera()
    X = np.random.default_rng(0).normal(scale=60.0, size=(50, 3))
    Xc = cam.to_camera(X)
    rays = cam.rays(cam.project(X))
    np.testing.assert_allclose(rays[:, 2], 1.0)
    np.testing.assert_allclose(rays * Xc[:, 2:3], Xc, atol=1e-9)
    # any leading shape, and offsets are differences of rays
    uv = cam.project(X).reshape(5, 10, 2)
    np.testing.assert_allclose(cam.rays(uv).reshape(-1, 3), rays, atol=1e-12)
    d = uv[0] - uv[1]
    np.testing.assert_allclose(cam.ray_offsets(d), cam.rays(uv[0]) - cam.rays(uv[1]), atol=1e-12)


def test_with_focal_keeps_the_image_of_the_face_centre_and_scales_the_depth():
    cam = _camera()
    f = 1.5 * cam.focal
    other = cam.with_focal(f)
    assert other.focal == pytest.approx(f) and other.K[1, 1] == pytest.approx(1.5 * cam.K[1, 1])
    np.testing.assert_allclose(other.principal_point, cam.principal_point)
    np.testing.assert_allclose(other.t[2], 1.5 * cam.t[2])
    centre = np.zeros((1, 3))  # on the optical axis: its pixel stays
    np.testing.assert_allclose(other.project(centre), cam.project(centre), atol=1e-9)
    assert cam.focal == 812.0  # the original is not changed


def test_zoomed_and_cropped_cameras():
    cam = _camera()
    X = np.random.default_rng(1).normal(scale=60.0, size=(20, 3))
    z = cam.zoomed(2.0)
    c = cam.principal_point
    np.testing.assert_allclose(z.project(X) - c, 2.0 * (cam.project(X) - c), atol=1e-9)
    A = crop_matrix(100, 50, 300, 256)
    crop = cam.cropped(A, 256)
    uv = cam.project(X)
    expected = (np.column_stack([uv, np.ones(len(uv))]) @ A.T)[:, :2]
    np.testing.assert_allclose(crop.project(X), expected, atol=1e-9)
    assert (crop.width, crop.height) == (256, 256)


def test_focal_prior_and_centred_principal_point():
    np.testing.assert_allclose(image_centre(640, 480), [319.5, 239.5])
    assert focal_prior(640, 480) == pytest.approx(1.4 * 640)
    K = intrinsics(900.0, 640, 480)
    assert Camera(K).focal == 900.0
    np.testing.assert_allclose(Camera(K).principal_point, image_centre(640, 480))


def _gauss_newton_problem(target):
    """Rosenbrock as least squares, r = (10 (y - x²), 1 - x): minimum at (1, 1), cost 0."""
    def residual(x):
        return np.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])

    def linearise(x, _cost):
        r = residual(x)
        J = np.array([[-20.0 * x[0], 10.0], [-1.0, 0.0]])
        return float(r @ r), (J.T @ J, J.T @ r)

    def try_step(x, system, mu):
        H, g = system
        cand = x - np.linalg.solve(H + mu * np.diag(np.diag(H)), g)
        r = residual(cand)
        target.append(mu)
        return cand, float(r @ r)
    return linearise, try_step


def test_levenberg_marquardt_reaches_the_minimum():
    mus = []
    linearise, try_step = _gauss_newton_problem(mus)
    x, cost, it = levenberg_marquardt(linearise, try_step, np.array([-1.2, 1.0]), 200, 1e-15, mu_max=1e10)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-6)
    assert cost < 1e-12 and it < 199
    assert mus[0] == 1e-3  # the schedule starts at MU_START


def test_levenberg_marquardt_stops_after_max_tries_or_mu_max_without_moving():
    def linearise(x, cost):
        return 1.0, None

    tried = []

    def try_step(x, system, mu):  # no step ever lowers the cost
        tried.append(mu)
        return x + 1.0, 2.0

    x, cost, it = levenberg_marquardt(linearise, try_step, 0.0, 10, 1e-3, max_tries=6)
    assert (x, cost, it, len(tried)) == (0.0, 1.0, 0, 6)
    assert tried == pytest.approx([1e-3 * 4.0 ** k for k in range(6)])
    tried.clear()
    levenberg_marquardt(linearise, try_step, 0.0, 10, 1e-3, mu_max=1e4)
    assert tried[-1] <= 1e4 < tried[-1] * 4.0 and len(tried) == 12
    with pytest.raises(ValueError):
        levenberg_marquardt(linearise, try_step, 0.0, 10, 1e-3)


def test_rotations_agree_with_scipy_and_invert():
    """Euler angles go through scipy's Rotation; the LM's hand-written SO(3) exponential agrees with it."""
    from scipy.spatial.transform import Rotation

    from fitter.geometry.camera import MODEL_TO_OPENCV, angles_of_rotation, rotation_matrix
    from fitter.geometry.least_squares import exp_so3

    rng = np.random.default_rng(4)
    for _ in range(50):
        yaw, pitch, roll = rng.uniform(-89, 89, 3)
        R = rotation_matrix(yaw, pitch, roll)
        c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
        Ry = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        assert np.abs(rotation_matrix(yaw) - Ry).max() < 1e-15  # yaw about the model's vertical axis, as documented
        np.testing.assert_allclose(angles_of_rotation(MODEL_TO_OPENCV @ R), (yaw, pitch, roll), atol=1e-9)
        w = rng.normal(0, 0.5, 3)
        assert np.abs(exp_so3(w) - Rotation.from_rotvec(w).as_matrix()).max() < 1e-14
    assert np.array_equal(exp_so3(np.zeros(3)), np.eye(3))
