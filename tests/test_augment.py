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
    from fitter.register import register_rgbd
    from fitter.synthetic import synthetic_rgbd

    cap = synthetic_rgbd(ict_prepared, np.random.default_rng(3), occluders=False)
    reg = register_rgbd(ict_prepared, cap["color"], cap["depth"], cap["K"])
    return cap, reg


def test_image_mesh_at_zero_rotation_reproduces_the_source(ict_prepared, registered_capture):
    from fitter.augment.image_mesh import build_image_mesh, render_pose

    cap, reg = registered_capture
    mesh = build_image_mesh(ict_prepared, reg.vertices, cap["K"], cap["depth"])
    H, W = cap["depth"].shape
    assert mesh.size == (W, H) and mesh.n_face_vertices == len(ict_prepared.face_area.domain)
    img, covered, _ = render_pose(mesh, cap["color"], np.eye(3))
    assert covered.mean() > 0.995  # the mesh covers the image
    diff = np.abs(img.astype(float) - cap["color"].astype(float)).mean(2)[covered]
    assert diff.mean() < 0.5 and np.percentile(diff, 99) < 4  # /255: the source, up to resampling
    # the background's anchors sit on the observed depth (where it exists)
    Xa = mesh.X[mesh.n_face_vertices:]
    px = np.rint(mesh.source_px[mesh.n_face_vertices:]).astype(int).clip(0, [W - 1, H - 1])
    d = cap["depth"][px[:, 1], px[:, 0]]
    ok = d > 0
    assert np.median(np.abs(Xa[ok, 2] - d[ok])) < 2.0  # mm


def test_image_mesh_turns_the_head(ict_prepared, registered_capture):
    from fitter.augment.image_mesh import build_image_mesh, render_pose
    from fitter.camera import MODEL_TO_OPENCV, rotation_matrix

    cap, reg = registered_capture
    mesh = build_image_mesh(ict_prepared, reg.vertices, cap["K"], cap["depth"])
    R = MODEL_TO_OPENCV @ rotation_matrix(30, 0, 0) @ MODEL_TO_OPENCV  # yaw 30° in the camera frame
    img, covered, tri = render_pose(mesh, cap["color"], R)
    # the nose tip moves to where the turned registration projects it
    from fitter.camera import Camera

    nose = reg.vertices[ict_prepared.model.metadata["reference_landmarks_68"][30]]
    c = mesh.face_center
    H, W = cap["depth"].shape
    cam = Camera(cap["K"], np.eye(3), np.zeros(3), W, H)
    u = np.rint(cam.project(((nose - c) @ R.T + c)[None])[0]).astype(int)
    assert covered[u[1], u[0]] and tri[u[1], u[0]] < mesh.n_face_triangles  # the face is in front there


def test_augmented_pose_invents_only_what_the_source_did_not_see(ict_prepared, registered_capture):
    from fitter.augment.image_mesh import (augment_pose, build_image_mesh, face_appearance, render_pose,
                                           seen_triangles)
    from fitter.camera import MODEL_TO_OPENCV, rotation_matrix
    from fitter.mesh import face_normals

    cap, reg = registered_capture
    mesh = build_image_mesh(ict_prepared, reg.vertices, cap["K"], cap["depth"])
    seen = seen_triangles(mesh)
    app = face_appearance(ict_prepared, reg.vertices, cap["K"], cap["color"])
    img0, inv0 = augment_pose(ict_prepared, mesh, cap["color"], np.eye(3), app, seen)
    assert inv0.mean() < 0.002  # at the source pose nothing is invented
    assert np.abs(img0.astype(float) - cap["color"].astype(float)).mean() < 1.0
    R = MODEL_TO_OPENCV @ rotation_matrix(40, 0, 0) @ MODEL_TO_OPENCV
    img, invented = augment_pose(ict_prepared, mesh, cap["color"], R, app, seen)
    _, covered, tri = render_pose(mesh, cap["color"], R)
    assert not (invented & covered & seen[np.maximum(tri, 0)]).any()  # seen surface keeps the source's colours
    face_inv = invented & covered & (tri >= 0) & (tri < mesh.n_face_triangles)
    assert face_inv.sum() > 200  # turning by 40° shows face the source did not see ...
    n = face_normals(mesh.X, mesh.F[:mesh.n_face_triangles])  # ... which faced away from the source camera
    P = mesh.X[mesh.F[:mesh.n_face_triangles]].mean(1)
    facing = -(n * P).sum(1) / np.linalg.norm(P, axis=1)
    assert np.median(facing[tri[face_inv]]) < 0.2 < np.median(facing[seen[:mesh.n_face_triangles]])
    assert img.shape == cap["color"].shape and img.dtype == np.uint8
