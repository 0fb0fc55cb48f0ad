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


@pytest.fixture(scope="module")
def registered_capture(ict_prepared):
    from fitter.bench.synthetic import synthetic_rgbd
    from fitter.registration.register import register_rgbd

    cap = synthetic_rgbd(ict_prepared, np.random.default_rng(3), occluders=False)
    reg = register_rgbd(ict_prepared, cap["color"], cap["depth"], cap["K"])
    return cap, reg


def test_image_mesh_at_zero_rotation_reproduces_the_source(ict_prepared, registered_capture):
    from fitter.augment.image_mesh import build_image_mesh, render_pose

    cap, reg = registered_capture
    mesh = build_image_mesh(ict_prepared, reg.vertices, cap["K"], cap["depth"])
    H, W = cap["depth"].shape
    m = ict_prepared.model
    assert mesh.size == (W, H) and np.isin(m.region(m.front_region()), mesh.face_vertices).all()
    view = render_pose(mesh, cap["color"], np.eye(3))
    assert view.covered.mean() > 0.999  # the mesh covers the image (eyes and mouth slits included)
    diff = np.abs(view.image.astype(float) - cap["color"].astype(float)).mean(2)[view.covered]
    assert diff.mean() < 0.5 and np.percentile(diff, 99) < 4  # /255: the source, up to resampling
    # the background's anchors sit on the observed depth (where it exists)
    Xa = mesh.X[mesh.n_face_vertices:]
    px = np.rint(mesh.source_px[mesh.n_face_vertices:]).astype(int).clip(0, [W - 1, H - 1])
    d = cap["depth"][px[:, 1], px[:, 0]]
    ok = d > 0
    assert np.median(np.abs(Xa[ok, 2] - d[ok])) < 2.0  # mm


def test_image_mesh_turns_the_head_rigidly(ict_prepared, registered_capture):
    from fitter.augment.image_mesh import build_image_mesh, render_pose
    from fitter.augment.sample import head_rotation
    from fitter.geometry.camera import Camera

    cap, reg = registered_capture
    mesh = build_image_mesh(ict_prepared, reg.vertices, cap["K"], cap["depth"])
    R = head_rotation(30, 0)
    view = render_pose(mesh, cap["color"], R)
    # the nose tip moves to where the turned registration projects it, and the face is in front there
    nose = reg.vertices[ict_prepared.model.metadata["reference_landmarks_68"][30]]
    c = mesh.face_center
    H, W = cap["depth"].shape
    u = np.rint(Camera(cap["K"], np.eye(3), np.zeros(3), W, H).project(((nose - c) @ R.T + c)[None])[0]).astype(int)
    assert view.covered[u[1], u[0]] and view.triangle_id[u[1], u[0]] < mesh.n_face_triangles
    # the head's anchors (scalp, ears, neck at the head's depth) turn rigidly with the face; far background stays
    moved = np.linalg.norm(view.vertices - mesh.X, axis=1)
    rigid = mesh.rigid[mesh.n_face_vertices:]
    assert rigid.sum() > 20  # the neck below the face area (the face area itself spans scalp and ears)
    expected = np.linalg.norm(((mesh.X - c) @ R.T + c) - mesh.X, axis=1)
    assert np.allclose(moved[mesh.rigid], expected[mesh.rigid])
    assert (moved[mesh.follow == 0] == 0).all() and (mesh.follow == 0).sum() > 0.5 * len(rigid)


@pytest.fixture(scope="module")
def augment_source(ict_prepared, registered_capture):
    from fitter.augment.sample import prepare_source
    from fitter.registration.capture import RegisteredCapture

    cap, reg = registered_capture
    rc = RegisteredCapture.of(ict_prepared, "synthetic", cap["color"], cap["depth"], cap["K"], reg)
    return prepare_source(ict_prepared, rc)


def test_a_zero_rotation_sample_reproduces_the_source(ict_prepared, registered_capture, augment_source):
    from fitter.augment.sample import synthesize

    cap, _ = registered_capture
    s = synthesize(ict_prepared, augment_source, 0, 0)
    assert s.invented.mean() < 1e-4  # nothing is invented at the source pose (a few pixels no triangle covers)
    diff = np.abs(s.image.astype(float) - cap["color"].astype(float)).max(2)
    assert diff.mean() < 0.3 and np.percentile(diff, 99.5) <= 3  # /255


@pytest.fixture(scope="module")
def turned_source(ict_prepared):
    """A capture of a face turned by 35° (the source sees one cheek at a grazing angle, hides part of it
    behind the nose) and its AugmentSource."""
    from fitter.augment.sample import prepare_source
    from fitter.bench.synthetic import synthetic_rgbd
    from fitter.registration.capture import RegisteredCapture
    from fitter.registration.register import register_rgbd

    cap = synthetic_rgbd(ict_prepared, np.random.default_rng(8), occluders=False, yaw=35.0)
    reg = register_rgbd(ict_prepared, cap["color"], cap["depth"], cap["K"])
    rc = RegisteredCapture.of(ict_prepared, "turned", cap["color"], cap["depth"], cap["K"], reg)
    return cap, prepare_source(ict_prepared, rc)


def test_the_filled_mask_is_what_the_source_did_not_see(ict_prepared, turned_source):
    """Face pixels of samples turned the other way are filled exactly where the registered face, ray-cast from
    the source camera (Open3D, independent of the renderer's z-buffer), was hidden or turned away."""
    import cv2
    import open3d as o3d

    from fitter.augment.image_mesh import render_pose
    from fitter.augment.sample import synthesize

    cap, source = turned_source
    mesh = source.mesh
    for yaw in (-50, -80):
        s = synthesize(ict_prepared, source, yaw, 0)
        view = render_pose(mesh, cap["color"], s.source_to_sample[:3, :3])
        # seen pixels keep the source's colours exactly; only the invented ones were changed
        assert (s.image[~s.invented] == view.image[~s.invented]).all()
        nf = mesh.n_face_triangles
        face = view.covered & (view.triangle_id < nf)
        tri = view.triangle_id[face]
        P = (view.barycentric[face[view.covered]][:, :, None] * mesh.X[mesh.F[tri]]).sum(1)  # source frame, mm
        A, B, C = (mesh.X[mesh.F[tri, k]] for k in range(3))
        n = np.cross(B - A, C - A)
        cos = (n * -P).sum(1) / np.linalg.norm(n, axis=1) / np.linalg.norm(P, axis=1)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(mesh.X[:mesh.n_face_vertices].astype(np.float32)),
                            o3d.core.Tensor(mesh.F[:nf].astype(np.uint32)))
        dist = np.linalg.norm(P, axis=1)
        rays = np.hstack([np.zeros_like(P), P / dist[:, None]]).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        seen = (cos > 0) & (hit >= dist - np.maximum(2.0, 0.005 * dist))
        judged = np.abs(cos) > 0.2  # at grazing angles seen or not is a matter of degree
        truth = np.zeros(face.shape, bool)
        truth[face] = ~seen & judged
        seen_px = np.zeros(face.shape, bool)
        seen_px[face] = seen & judged
        assert truth.sum() > 100  # the turn shows face the source did not see
        missed = truth & ~s.invented
        unseen_any = np.zeros(face.shape, bool)
        unseen_any[face] = ~seen | ~judged  # grazing included: the blend's ring is drawn around all of it
        blend_ring = cv2.dilate(unseen_any.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        extra = seen_px & s.invented & ~blend_ring
        assert missed.sum() <= 0.03 * truth.sum(), (yaw, missed.sum(), truth.sum())
        assert extra.sum() <= 0.03 * truth.sum(), (yaw, extra.sum(), truth.sum())


def test_labels_are_the_registration_moved_and_projected(ict_prepared, registered_capture, augment_source):
    from fitter.augment.sample import synthesize
    from fitter.detection.landmarks import outer_interocular, to_68

    cap, reg = registered_capture
    m, emb = ict_prepared.model, ict_prepared.embedding
    src = augment_source
    s0 = synthesize(ict_prepared, src, 0, 0)
    proj = lambda X, K: (X @ K.T)[:, :2] / X[:, 2:3]  # noqa: E731
    # at 0° the labels are the registration's landmarks projected through the source camera
    L = emb.points(reg.vertices, m.faces, yaw_deg=s0.angles[0])
    assert np.abs(s0.landmarks_478 - proj(L, cap["K"])).max() < 1e-6
    iods = []
    for yaw, pitch in ((30, 0), (-60, 20), (60, -20)):
        s = synthesize(ict_prepared, src, yaw, pitch)
        # the pose labels reproduce the moved registration: scale R (mean + S_morph) + t = T · registration
        T = s.source_to_sample
        moved = reg.vertices @ T[:3, :3].T + T[:3, 3]
        assert np.abs(s.scale * (m.mean + src.capture.s_morph) @ s.R.T + s.t - moved).max() < 1e-6
        assert abs(s.angles[0] - yaw - s0.angles[0]) < 3 and abs(s.angles[1] - pitch - s0.angles[1]) < 3
        L = emb.points(moved, m.faces, yaw_deg=s.angles[0])
        assert np.abs(s.landmarks_478 - proj(L, s.K)).max() < 1e-6
        assert np.abs(s.landmarks_68 - proj(to_68(L), s.K)).max() < 1e-6
        # against the truth moved by the same transform (the synthetic face's own mesh)
        truth3d = to_68(emb.points(cap["V"] @ T[:3, :3].T + T[:3, 3], m.faces, yaw_deg=s.angles[0]))
        # the interocular distance as it would be seen frontally at the face's depth (it does not shrink with yaw)
        iod_px = s.K[0, 0] * outer_interocular(truth3d) / truth3d[[36, 45], 2].mean()
        iods.append(np.median(np.linalg.norm(s.landmarks_68 - proj(truth3d, s.K), axis=1)) / iod_px)
        # hidden landmarks lie on the side the nose turns to (the far cheek, behind the nose)
        if abs(yaw) == 60:
            hidden = s.landmarks_478[~s.visible_478]
            assert len(hidden) > 10 and s.visible_478.sum() > 300
            assert np.sign(np.median(hidden[:, 0]) - s.landmarks_478[:, 0].mean()) == np.sign(yaw)
    assert max(iods) < 0.015, iods  # 1.5 % of the interocular distance
