"""Score a reconstruction against a ground-truth scan from Python (the MICC Florence protocol).

    python examples/api_evaluate.py RECON.obj SCAN [--gt-landmarks FILE]

RECON: a mesh in the model's topology in mm (mesh.obj of `facefit fit`, registered.obj of `facefit
register`); SCAN: the ground truth. Also scores the model's mean face, the baseline any fit must beat.
"""
import argparse

import fitter
from fitter.geometry.mesh import read_obj
from fitter.registration.scan import read_points


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recon")
    ap.add_argument("scan")
    ap.add_argument("--gt-landmarks", help="nose tip, or eyes, nose tip and mouth corners ('x y z' lines)")
    args = ap.parse_args()
    model = fitter.PreparedModel.load("ict")
    scan = fitter.read_scan(args.scan)
    points = None if args.gt_landmarks is None else read_points(args.gt_landmarks) * scan.unit_scale
    for name, V in (("reconstruction", read_obj(args.recon).V), ("mean face", model.model.mean)):
        e = fitter.evaluate_mesh(model, V, scan, points)
        print(f"{name}: MICC error {e['mean_mm']:.3f} mm (RMSE {e['rmse_mm']:.3f}, median {e['median_mm']:.3f}, "
              f"{e['gt_points']} scan points, alignment scale {e['scale']:.3f})")


if __name__ == "__main__":
    main()
