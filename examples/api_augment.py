"""Out-of-plane augmentation from Python: register an RGB-D capture, then turn the head to new poses and
get each sample's image, filled mask and labels as arrays.

    python examples/api_augment.py [REGISTRATION_DIR] [--seed 7] [-o OUT]

REGISTRATION_DIR: a folder written by `facefit register` (the capture is read back from its capture.json).
Without it, a synthetic capture is made (`fitter.bench.synthetic.synthetic_rgbd`) and the labels are checked
against its true mesh moved by the same transform (2D landmark error in % of the interocular distance).
With -o, the samples are written as a dataset (OUT/<capture>/..., OUT/index.csv).
"""
import argparse

import numpy as np

import fitter


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("registration", nargs="?", help="a folder written by 'facefit register'")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    model = fitter.PreparedModel.load("ict")
    truth = None
    if args.registration:
        capture = fitter.load_registered_capture(model, args.registration)  # colour, depth, K, registration
    else:
        from fitter.bench.synthetic import synthetic_rgbd

        truth = synthetic_rgbd(model, np.random.default_rng(args.seed), occluders=False)
        reg = fitter.register_rgbd(model, truth["color"], truth["depth"], truth["K"])
        capture = fitter.RegisteredCapture.of(model, "capture", truth["color"], truth["depth"], truth["K"], reg)
    source = fitter.prepare_source(model, capture)          # the image mesh, what the source saw, the face's light
    for yaw in (-60, -30, 0, 30, 60):
        s = fitter.synthesize(model, source, yaw, 0)       # Sample: .image, .invented, .landmarks_68, .R, .t, ...
        line = (f"yaw {yaw:+3d}: face yaw {s.angles[0]:+6.1f} deg, {s.visible_68.sum()} of 68 landmarks visible, "
                f"{100 * s.invented.mean():.1f} % of the image filled")
        if truth is not None:
            from fitter.detection.landmarks import outer_interocular, to_68

            T = s.source_to_sample
            L = to_68(model.embedding.points(truth["V"] @ T[:3, :3].T + T[:3, 3], model.model.faces, s.angles[0]))
            iod = s.K[0, 0] * outer_interocular(L) / L[[36, 45], 2].mean()
            uv = (L @ s.K.T)[:, :2] / L[:, 2:3]
            line += f", label error {100 * np.median(np.linalg.norm(s.landmarks_68 - uv, axis=1)) / iod:.2f} % IOD"
        print(line)
    if args.output:
        from fitter.augment.dataset import augment_capture, rebuild_index

        rows, _ = augment_capture(model, capture, f"{args.output}/{capture.name}", yaws=(-45, 0, 45), pitches=(0,))
        rebuild_index(args.output)
        print(f"{len(rows)} samples -> {args.output}")


if __name__ == "__main__":
    main()
