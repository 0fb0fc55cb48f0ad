"""The multi-view plane sweep (fitter.video.sweep) on the mean ICT face with a random texture, seen by known
cameras: it finds a known bump, the deformation moves the shape towards it, and views that do not see a
point do not vote for it."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def bumped_scene(ict_prepared):
    """Views (yaw −30…30°) of the mean face with a 3 mm Gaussian bump (σ 12 mm) on one cheek, rendered with a
    random per-vertex texture; the sweep's shape is the face without the bump."""
    from fitter.geometry.camera import look_at_face
    from fitter.geometry.mesh import vertex_normals
    from fitter.geometry.render import get_renderer
    from fitter.video.sweep import View

    p = ict_prepared
    m = p.model
    V0 = m.mean.astype(float)
    tex = np.repeat(np.random.default_rng(0).uniform(0.2, 0.9, (m.n_vertices, 1)), 3, axis=1)
    n0 = vertex_normals(V0, m.faces)
    cheek = p.embedding.points(V0, m.faces)[50]
    bump = 3.0 * np.exp(-(np.linalg.norm(V0 - cheek, axis=1) / 12.0) ** 2)
    bump[~np.isin(np.arange(m.n_vertices), m.region("narrow_face"))] = 0.0
    Vt = V0 + bump[:, None] * n0
    center = V0[p.face_area.domain].mean(0)
    cams = {yaw: look_at_face(center, yaw, 0, 600.0, 1200.0, 640, 640) for yaw in (-30, -15, 0, 15, 30, 70)}
    images = {yaw: get_renderer().render(Vt, p.render_faces, cam, vertex_colors=tex, ambient=1.0,
                                         diffuse=0.0).color_uint8() for yaw, cam in cams.items()}
    views = {yaw: View(images[yaw], cams[yaw], V0) for yaw in cams}
    return V0, bump, views


def test_the_sweep_finds_a_known_bump_and_the_deformation_follows(ict_prepared, bumped_scene):
    from fitter.geometry.mesh import vertex_normals
    from fitter.video.sweep import ShapeDeformer, sweep

    p = ict_prepared
    V0, bump, views = bumped_scene
    dom = p.face_area.domain
    res = sweep([views[y] for y in (-30, -15, 0, 15, 30)], p.render_faces, dom)
    true = bump[dom]
    sure = res.confidence > 0
    top, flat = sure & (true > 2.0), sure & (true < 0.05)
    assert top.sum() >= 5 and flat.sum() > 1000
    assert abs(np.median(res.offsets[top]) - np.median(true[top])) < 0.6  # mm
    assert np.median(np.abs(res.offsets[flat])) < 0.2
    D = ShapeDeformer(p.face_area.F_local, len(dom)).displacement(vertex_normals(V0, p.model.faces)[dom],
                                                                   res.offsets, res.confidence)
    err_before = np.abs(true)
    err_after = np.linalg.norm(V0[dom] + D - (V0[dom] + true[:, None] * vertex_normals(V0, p.model.faces)[dom]),
                               axis=1)
    peak = true > 2.0
    assert err_after[peak].mean() < 0.75 * err_before[peak].mean()  # the bump is mostly recovered
    assert err_after[true < 0.05].mean() < 0.25  # and the flat face barely disturbed (mm)


def test_views_that_do_not_see_a_point_do_not_vote(ict_prepared, bumped_scene):
    """At 70° the far cheek is hidden behind the face: the 70° view must not vote there — scribbling over the
    pixels where those hidden points project changes nothing."""
    from fitter.geometry.mesh import vertex_normals
    from fitter.video.sweep import View, sweep, visible_in

    p = ict_prepared
    V0, _, views = bumped_scene
    dom = p.face_area.domain
    side = views[70]
    normals = vertex_normals(V0, p.render_faces)[dom]
    hidden = ~visible_in(side, p.render_faces, dom, normals)
    front = visible_in(views[0], p.render_faces, dom, normals)
    far = hidden & front  # seen from the front, hidden at 70°
    assert far.sum() > 500
    uv = np.rint(side.camera.project(V0[dom[far]])).astype(int)
    inside = (uv >= 0).all(1) & (uv[:, 0] < 640) & (uv[:, 1] < 640)
    assert inside.sum() > 300  # they project into the 70° image (onto the nose and the near cheek)
    scribbled = side.image.copy()
    scribbled[uv[inside, 1], uv[inside, 0]] = np.random.default_rng(1).integers(0, 255, (inside.sum(), 3))
    base = [views[y] for y in (-15, 0, 15)]
    a = sweep(base + [side], p.render_faces, dom)
    b = sweep(base + [View(scribbled, side.camera, side.vertices)], p.render_faces, dom)
    ids = np.flatnonzero(far)
    assert (a.views_seen[ids] <= 3).all()
    assert np.allclose(a.offsets[ids], b.offsets[ids]) and np.allclose(a.confidence[ids], b.confidence[ids])
