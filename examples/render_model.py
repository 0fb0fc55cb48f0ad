"""Render the installed ICT model at a few poses and save depth, triangle-id and colour pictures.

    python examples/render_model.py [-o renders/]

Shows the renderer's outputs (depth in mm, index map, normals) for a random identity.
"""
import argparse
from pathlib import Path

import numpy as np

from fitter.geometry.camera import look_at_face
from fitter.geometry.render import render, vertex_visibility
from fitter.io import write_image_atomic
from fitter.prepared import PreparedModel


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="renders")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.output)
    prepared = PreparedModel.load("ict")
    m = prepared.model
    V = m.shape(*m.random_coefficients(np.random.default_rng(args.seed), 1.0, 0.3))
    F = prepared.render_faces
    for yaw in (-45, 0, 45):
        cam = look_at_face(V[m.region("face")].mean(0), yaw, 0, 650, 900, 512, 512)
        r = render(V, F, cam, vertex_colors=prepared.painted_albedo)
        d = r.depth
        dv = np.where(r.mask, (d - d[r.mask].min()) / (np.ptp(d[r.mask]) + 1e-9), 1.0)
        depth_img = (255 * (1 - dv)).astype(np.uint8)
        tri_img = (np.stack([r.triangle_id * 37 % 256, r.triangle_id * 91 % 256, r.triangle_id * 13 % 256], -1)
                   * r.mask[..., None]).astype(np.uint8)
        nrm_img = ((r.normal * [1, -1, -1] + 1) * 127.5 * r.mask[..., None]).astype(np.uint8)
        write_image_atomic(out / f"yaw{yaw:+d}.png", np.hstack([r.color_uint8(), np.dstack([depth_img] * 3),
                                                                tri_img, nrm_img]))
        vis = vertex_visibility(V, F, cam, r)
        face = m.region("face")
        print(f"yaw {yaw:+d}: {r.mask.mean() * 100:.1f} % pixels covered, depth {d[r.mask].min():.1f}-"
              f"{d[r.mask].max():.1f} mm, {vis[face].mean() * 100:.1f} % of face vertices visible")
    print(f"wrote {out.resolve()}/yaw*.png (colour | depth | triangle id | normals)")


if __name__ == "__main__":
    main()
