"""Register the face model to an RGB-D capture from Python (arrays in, arrays out).

    python examples/api_register_rgbd.py [COLOR DEPTH K.json] [--seed 7]

Without files, a synthetic capture (a random face with sensor noise, holes, a hair band and a hand,
`fitter.bench.synthetic.synthetic_rgbd`) is made and the registration is scored against its true vertices.
"""
import argparse

import numpy as np

import fitter


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="COLOR DEPTH K.json (16-bit PNG depth in mm)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    model = fitter.PreparedModel.load("ict")
    truth = None
    if args.files:
        color_path, depth_path, k_path = args.files
        color, depth, K = fitter.read_image(color_path), fitter.read_depth(depth_path), fitter.read_intrinsics(k_path)
    else:
        from fitter.bench.synthetic import synthetic_rgbd

        truth = synthetic_rgbd(model, np.random.default_rng(args.seed))
        color, depth, K = truth["color"], truth["depth"], truth["K"]
    reg = fitter.register_rgbd(model, color, depth, K)    # color (H, W, 3) uint8, depth (H, W) mm, K (3, 3) px
    print(f"registered {reg.vertices.shape} vertices (camera frame, mm) in {reg.report['times_s']['total_s']:.2f} s;"
          f" inliers {reg.report['inlier_fraction'][-1]:.2f}")
    if truth is not None:
        face = model.face_area.domain
        seen = truth["visible"][face] & ~truth["occluded"][face]
        err = np.linalg.norm(reg.vertices[face] - truth["V"][face], axis=1)[seen]
        print(f"median error on the visible face: {np.median(err):.2f} mm")


if __name__ == "__main__":
    main()
