"""mesh.glb and mesh.ply: written with their texture / UVs and read back by other readers."""
import json

import cv2
import numpy as np
import pytest

from fitter.photo.export import CAMERA_TO_GLTF, split_uv_seams, write_glb, write_ply


@pytest.fixture(scope="module")
def textured_mean(ict_model):
    m = ict_model
    S = 256
    u, v = np.meshgrid(np.linspace(0, 255, S), np.linspace(255, 0, S))
    texture = np.dstack([u, v, np.full_like(u, 90)]).astype(np.uint8)  # a UV-coded image: colour = UV
    V = m.mean + np.array([0.0, 0.0, 600.0])
    return m, V, texture


def test_seam_split_keeps_every_corner(textured_mean):
    m, _, _ = textured_mean
    vid, uid, tris = split_uv_seams(m.faces, m.uv_faces)
    np.testing.assert_array_equal(vid[tris], m.faces)
    np.testing.assert_array_equal(uid[tris], m.uv_faces)
    assert len(vid) >= max(m.n_vertices, len(m.uv)) - 1000  # seams add vertices, never lose corners


def test_glb_round_trip_with_its_texture(textured_mean, tmp_path):
    import open3d as o3d
    import pygltflib

    m, V, texture = textured_mean
    write_glb(tmp_path / "m.glb", V, m.faces, m.uv, m.uv_faces, texture)
    g = pygltflib.GLTF2().load(str(tmp_path / "m.glb"))
    blob = g.binary_blob()

    def view(i):
        bv = g.bufferViews[i]
        return blob[bv.byteOffset:bv.byteOffset + bv.byteLength]

    image = cv2.imdecode(np.frombuffer(view(g.images[0].bufferView), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(image, texture)  # the texture survives exactly (PNG inside the GLB)
    prim = g.meshes[0].primitives[0]
    P = np.frombuffer(view(g.accessors[prim.attributes.POSITION].bufferView), np.float32).reshape(-1, 3)
    T = np.frombuffer(view(g.accessors[prim.attributes.TEXCOORD_0].bufferView), np.float32).reshape(-1, 2)
    I = np.frombuffer(view(g.accessors[prim.indices].bufferView), np.uint32).reshape(-1, 3)
    vid, uid, _ = split_uv_seams(m.faces, m.uv_faces)
    np.testing.assert_allclose(P, V[vid] @ CAMERA_TO_GLTF.T, atol=1e-3)
    np.testing.assert_allclose(T[:, 0], m.uv[uid, 0], atol=1e-6)
    np.testing.assert_allclose(T[:, 1], 1 - m.uv[uid, 1], atol=1e-6)
    assert len(I) == len(m.faces)
    back = o3d.io.read_triangle_mesh(str(tmp_path / "m.glb"))  # another reader (ASSIMP)
    assert len(back.triangles) == len(m.faces) and back.has_triangle_uvs()


def test_ply_round_trip_with_uvs_and_colours(textured_mean, tmp_path):
    import open3d as o3d
    from plyfile import PlyData

    m, V, texture = textured_mean
    write_ply(tmp_path / "m.ply", V, m.faces, m.uv, m.uv_faces, texture)
    ply = PlyData.read(str(tmp_path / "m.ply"))
    vert = ply["vertex"]
    assert "TextureFile texture.png" in ply.comments and len(ply["face"]) == len(m.faces)
    st = np.column_stack([vert["s"], vert["t"]])
    # the texture is UV-coded: each vertex's colour gives back its UV
    rgb = np.column_stack([vert["red"], vert["green"]]).astype(float) / 255.0
    inside = (st > 0.02).all(1) & (st < 0.98).all(1)
    assert np.abs(rgb[inside] - st[inside]).max() < 0.02
    back = o3d.io.read_triangle_mesh(str(tmp_path / "m.ply"))
    assert len(back.triangles) == len(m.faces) and back.has_vertex_colors()


def test_fit_writes_the_asked_format_and_removes_the_other(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli
    from conftest import PHOTOS, need

    photo = need(PHOTOS / "skimage_astronaut.png", "photo")
    run = lambda fmt: CliRunner().invoke(cli, ["fit", str(photo), "-o", str(tmp_path), "--stages", "coarse",  # noqa: E731
                                               "--texture-size", "256", "--mesh-format", fmt])
    d = tmp_path / "skimage_astronaut"
    assert run("glb").exit_code == 0 and (d / "mesh.glb").is_file() and (d / "mesh.obj").is_file()
    assert run("ply").exit_code == 0 and (d / "mesh.ply").is_file() and not (d / "mesh.glb").exists()
    assert json.loads((d / "params.json").read_text())["image_size"] == [512, 512]


def test_a_mesh_without_texture_is_written_flat_grey(textured_mean, tmp_path):
    import pygltflib
    from plyfile import PlyData

    m, V, _ = textured_mean
    write_glb(tmp_path / "n.glb", V, m.faces, m.uv, m.uv_faces, None)
    write_ply(tmp_path / "n.ply", V, m.faces, m.uv, m.uv_faces, None)
    assert len(pygltflib.GLTF2().load(str(tmp_path / "n.glb")).images) == 1
    ply = PlyData.read(str(tmp_path / "n.ply"))
    assert not any(c.startswith("TextureFile") for c in ply.comments) and (ply["vertex"]["red"] == 190).all()
