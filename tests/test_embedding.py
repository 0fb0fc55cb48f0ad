"""The landmark embedding stored with the installed ICT model, measured again here."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from fitter.detection import landmarks as lmk
from fitter.geometry.camera import look_at_face
from fitter.geometry.render import render
from fitter.install.embedding_build import reference_distances
from fitter.io import read_image
from fitter.model.embedding import load_embedding
from fitter.model.painting import DISTANCE_MM, FOCAL_PX, RENDER_BACKGROUND


@pytest.fixture(scope="module")
def emb(ict_model):
    e = load_embedding(ict_model)
    assert e is not None, "the installed model has no landmark embedding"
    return e


def test_inner51_close_to_the_models_own_68(ict_model, emb):
    ref = reference_distances(ict_model, emb)
    assert ref["inner51_median_mm"] <= 4.0
    assert ref["eyes_median_mm"] <= 3.0 and ref["nose_median_mm"] <= 4.0 and ref["mouth_median_mm"] <= 4.0
    stored = ict_model.metadata["landmark_embedding"]["reference_68"]
    assert abs(stored["inner51_median_mm"] - ref["inner51_median_mm"]) < 1e-9


def test_reprojects_onto_a_held_out_render(ict_prepared, emb):
    """A new identity and pose (never used to build the embedding): detected landmarks fall near the
    projected embedding, with no systematic offset (the half-pixel convention is right)."""
    m = ict_prepared.model
    alpha = m.random_coefficients(np.random.default_rng(4242), 1.0)[0]
    V = m.shape(alpha)
    errs, offs = [], []
    for yaw, pitch in ((18, -6), (-41, 4)):
        cam = look_at_face(V[m.region("face")].mean(0), yaw, pitch, DISTANCE_MM, FOCAL_PX, 512, 512)
        res = render(V, ict_prepared.render_faces, cam, vertex_colors=ict_prepared.painted_albedo,
                     background=RENDER_BACKGROUND)
        det = lmk.detect_landmarks(res.color_uint8())[0].points
        proj = cam.project(emb.points(V, m.faces, yaw))
        inner = np.setdiff1d(np.arange(478), emb.contour_ids)
        errs.append(np.linalg.norm(det - proj, axis=1)[inner])
        offs.append((det - proj)[inner].mean(0))
    assert np.median(np.concatenate(errs)) < 4.5
    assert np.all(np.abs(np.mean(offs, axis=0)) < 1.0)


def test_vertex_weights_are_a_convex_linear_map(ict_model, emb):
    m = ict_model
    W = emb.vertex_weights(m.faces, m.n_vertices, yaw_deg=22.5)
    np.testing.assert_allclose(np.asarray(W.sum(1)).ravel(), 1.0, atol=1e-9)
    assert W.min() >= 0
    V = m.shape(m.random_coefficients(np.random.default_rng(1), 1.0)[0])
    np.testing.assert_allclose(W @ V, emb.points(V, m.faces, 22.5))
    # between two yaw bins the contour is the linear blend of the bins
    c = emb.contour_ids
    p15, p30 = emb.points(V, m.faces, 15.0)[c], emb.points(V, m.faces, 30.0)[c]
    np.testing.assert_allclose(emb.points(V, m.faces, 22.5)[c], 0.5 * (p15 + p30), atol=1e-9)
    # non-contour landmarks do not depend on the view
    other = np.setdiff1d(np.arange(478), c)
    np.testing.assert_allclose(emb.points(V, m.faces, -60)[other], emb.points(V, m.faces, 60)[other])


def test_model_info_json_reports_the_figures(ict_model):
    r = CliRunner().invoke(cli, ["model", "info", "ict", "--json"])
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert (info["n_identity"], info["n_expression"], info["units"]) == (100, 53, "mm")
    e = info["landmark_embedding"]
    assert e["available"] and e["reference_68"]["inner51_median_mm"] <= 4.0
    assert e["reprojection"]["views_detected"] >= 0.9 * e["reprojection"]["views"]


def test_show_writes_a_preview_with_landmarks(ict_model, tmp_path):
    out = tmp_path / "p.png"
    r = CliRunner().invoke(cli, ["model", "show", "ict", "--yaw", "45", "--size", "384", "-o", str(out)])
    assert r.exit_code == 0, r.output
    img = read_image(out)
    assert img.shape == (384, 384, 3)
    green = (img[..., 1] > 200) & (img[..., 0] < 90) & (img[..., 2] < 90)
    assert green.sum() > 100  # the embedded landmarks are drawn
    r = CliRunner().invoke(cli, ["model", "show", "ict", "--yaw", "120", "-o", str(tmp_path / "q.png")])
    assert r.exit_code == 2 and "--yaw" in r.output
