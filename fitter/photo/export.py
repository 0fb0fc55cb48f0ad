"""Mesh files people open directly: a textured OBJ (`write_textured_obj`: .obj + .mtl + texture.png), glTF
binary (.glb, with its texture) and PLY (with per-vertex UVs and colours), written with pygltflib and plyfile.

Both need one UV per vertex, so the mesh is first split along its UV seams (`split_uv_seams`: one output
vertex per distinct (vertex, UV) pair of the triangle corners; normals are the unsplit mesh's, so the
surface stays smooth across seams). The GLB is turned into glTF's frame (y up, the viewer on +z: the
OpenCV camera frame rotated 180° about x, (x, −y, −z)); the PLY keeps the coordinates of mesh.obj.
"""
import io

import numpy as np

from ..geometry.mesh import vertex_normals, write_obj
from ..io import write_bytes_atomic, write_image_atomic, write_text_atomic

CAMERA_TO_GLTF = np.diag([1.0, -1.0, -1.0])


OBJ_MATERIAL = "newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd texture.png\n"


MESH_FORMATS = ("obj", "glb", "ply")  # obj always; glb / ply beside it on request


def write_textured_obj(path, V, model, texture):
    """`path` (an .obj of V (N, 3) mm in the model's topology and UV layout) with its .mtl and texture.png
    ((T, T, 3) uint8) beside it, each atomically."""
    from pathlib import Path

    path = Path(path)
    write_image_atomic(path.parent / "texture.png", texture)
    write_text_atomic(path.with_suffix(".mtl"), OBJ_MATERIAL)
    write_obj(path, V, model.faces, model.uv, model.uv_faces, mtl_name=path.with_suffix(".mtl").name, material="face")


def split_uv_seams(F, F_uv):
    """(vertex ids (M,), uv ids (M,), triangles (T, 3)) of the seam-split mesh: output vertex i is model
    vertex vertex_ids[i] with UV uv_ids[i]."""
    F, F_uv = np.asarray(F, np.int64), np.asarray(F_uv, np.int64)
    n_uv = int(F_uv.max()) + 1
    key = F.ravel() * n_uv + F_uv.ravel()
    uniq, inverse = np.unique(key, return_inverse=True)
    return uniq // n_uv, uniq % n_uv, inverse.reshape(F.shape)


UNTEXTURED = np.full((1, 1, 3), 190, np.uint8)  # the texture of a mesh whose texture could not be made


def _texture_png(texture):
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(texture[..., ::-1]))
    if not ok:
        raise ValueError("cannot encode the texture as PNG")
    return png.tobytes()


def _buffer_views(parts):
    """glTF buffer views of (bytes, target) parts laid end to end in one binary buffer (4-byte aligned):
    (views, blob)."""
    import pygltflib as g

    chunks, views, offset = [], [], 0
    for data, target in parts:
        views.append(g.BufferView(buffer=0, byteOffset=offset, byteLength=len(data), target=target))
        pad = (-len(data)) % 4
        chunks.append(data + b"\0" * pad)
        offset += len(data) + pad
    return views, b"".join(chunks)


def write_glb(path, V, F, uv, F_uv, texture):
    """Write a textured glTF binary: V (N, 3) mm in the OpenCV camera frame, F (T, 3), uv (U, 2) in
    OBJ's convention (v up), F_uv (T, 3), texture (S, S, 3) uint8 RGB (None: a flat grey). Atomic."""
    write_bytes_atomic(path, textured_glb(V, F, uv, F_uv, texture))


def textured_glb(V, F, uv, F_uv, texture):
    """The bytes `write_glb` writes."""
    texture = UNTEXTURED if texture is None else texture
    vid, uid, tris = split_uv_seams(F, F_uv)
    P = (np.asarray(V, float)[vid] @ CAMERA_TO_GLTF.T).astype(np.float32)
    N = (vertex_normals(np.asarray(V, float), np.asarray(F))[vid] @ CAMERA_TO_GLTF.T).astype(np.float32)
    T = np.column_stack([uv[uid, 0], 1.0 - uv[uid, 1]]).astype(np.float32)  # glTF: v down from the top
    I = tris.astype(np.uint32).ravel()
    return _glb(P, N, I, uv=T, png=_texture_png(texture))


def vertex_colored_glb(V, F, colors):
    """glTF binary bytes of the triangles F (T, 3) of V (N, 3) mm in the OpenCV camera frame (turned to glTF's
    y-up frame), coloured per vertex by colors (N, 3) uint8 sRGB (stored linear, as glTF wants); only the
    vertices F uses are stored."""
    F = np.asarray(F, np.int64)
    used, tris = np.unique(F, return_inverse=True)
    V = np.asarray(V, float)
    P = (V[used] @ CAMERA_TO_GLTF.T).astype(np.float32)
    N = (vertex_normals(V, F)[used] @ CAMERA_TO_GLTF.T).astype(np.float32)
    c = np.asarray(colors, np.uint8)[used] / 255.0  # sRGB; glTF's vertex colours are linear
    C = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    I = tris.reshape(F.shape).astype(np.uint32).ravel()
    return _glb(P, N, I, colors=C)


def _glb(P, N, I, uv=None, png=None, colors=None):
    """glTF binary bytes of one mesh: positions P, normals N (n, 3) float32 in glTF's frame, triangle
    indices I (3T,) uint32, and either UVs (n, 2) float32 with the PNG texture they map, or linear vertex
    colours (n, 3) float32."""
    import pygltflib as g

    extra = uv if uv is not None else colors
    parts = [(P.tobytes(), g.ARRAY_BUFFER), (N.tobytes(), g.ARRAY_BUFFER), (extra.tobytes(), g.ARRAY_BUFFER),
             (I.tobytes(), g.ELEMENT_ARRAY_BUFFER)] + ([(png, None)] if uv is not None else [])
    views, blob = _buffer_views(parts)
    accessors = [
        g.Accessor(bufferView=0, componentType=g.FLOAT, count=len(P), type=g.VEC3,
                   min=P.min(0).tolist(), max=P.max(0).tolist()),
        g.Accessor(bufferView=1, componentType=g.FLOAT, count=len(N), type=g.VEC3),
        g.Accessor(bufferView=2, componentType=g.FLOAT, count=len(extra), type=g.VEC2 if uv is not None else g.VEC3),
        g.Accessor(bufferView=3, componentType=g.UNSIGNED_INT, count=len(I), type=g.SCALAR),
    ]
    if uv is not None:
        attributes = g.Attributes(POSITION=0, NORMAL=1, TEXCOORD_0=2)
        pbr = g.PbrMetallicRoughness(baseColorTexture=g.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=0.9)
        texture = dict(textures=[g.Texture(sampler=0, source=0)], samplers=[g.Sampler(magFilter=9729, minFilter=9987)],
                       images=[g.Image(bufferView=4, mimeType="image/png")])
    else:
        attributes = g.Attributes(POSITION=0, NORMAL=1, COLOR_0=2)
        pbr = g.PbrMetallicRoughness(metallicFactor=0.0, roughnessFactor=0.9)
        texture = {}
    gltf = g.GLTF2(
        asset=g.Asset(generator="facefit", version="2.0"), scene=0, scenes=[g.Scene(nodes=[0])],
        nodes=[g.Node(mesh=0, name="face")],
        meshes=[g.Mesh(name="face", primitives=[g.Primitive(attributes=attributes, indices=3, material=0)])],
        materials=[g.Material(name="face", doubleSided=True, pbrMetallicRoughness=pbr)],
        accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(blob))], **texture)
    gltf.set_binary_blob(blob)
    return b"".join(gltf.save_to_bytes())


def write_ply(path, V, F, uv, F_uv, texture, texture_name="texture.png"):
    """Write a binary PLY of the seam-split mesh: per vertex x, y, z (mm, as mesh.obj), nx, ny, nz, s, t
    (UV, v up) and red, green, blue sampled from the texture; faces; a `TextureFile` comment naming the
    texture (MeshLab's convention; texture None: a flat grey, no comment). Atomic."""
    from plyfile import PlyData, PlyElement

    from .texture import sample_image

    comments = ["facefit mesh: mm, OpenCV camera frame"] + ([] if texture is None else [f"TextureFile {texture_name}"])
    texture = UNTEXTURED if texture is None else texture
    vid, uid, tris = split_uv_seams(F, F_uv)
    V = np.asarray(V, float)
    S = texture.shape[0]
    st = np.asarray(uv, float)[uid]
    rgb = sample_image(texture.astype(np.float32), np.column_stack([st[:, 0] * S - 0.5, (1 - st[:, 1]) * S - 0.5]))
    N = vertex_normals(V, np.asarray(F))[vid]
    vert = np.empty(len(vid), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4"),
                                     ("s", "f4"), ("t", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for k, col in zip("xyz", V[vid].T):
        vert[k] = col
    for k, col in zip(("nx", "ny", "nz"), N.T):
        vert[k] = col
    vert["s"], vert["t"] = st[:, 0], st[:, 1]
    for k, col in zip(("red", "green", "blue"), np.clip(np.rint(rgb[:, :3]), 0, 255).T):
        vert[k] = col
    faces = np.empty(len(tris), dtype=[("vertex_indices", "i4", (3,))])
    faces["vertex_indices"] = tris
    ply = PlyData([PlyElement.describe(vert, "vertex"), PlyElement.describe(faces, "face")],
                  comments=comments)
    buf = io.BytesIO()
    ply.write(buf)
    write_bytes_atomic(path, buf.getvalue())
