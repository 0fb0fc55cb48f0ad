"""Fit a photo from Python: the coarse, medium and fine stages, then the outputs `facefit fit` writes.

    python examples/api_fit_photo.py ../shared/data/photos/whitehouse_obama.jpg -o out_api

Prints each face's landmark error, focal length and fine-stage figures, and where its files went.
"""
import argparse

import numpy as np

import fitter


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo")
    ap.add_argument("-o", "--output", default="out_api")
    ap.add_argument("--all-faces", action="store_true")
    args = ap.parse_args()
    model = fitter.PreparedModel.load("ict")            # load once; reuse for every photo
    faces = fitter.fit_photo(args.photo, model, all_faces=args.all_faces)
    for face in faces:
        cam = face.fit.camera                             # K (px), R, t (mm): model frame -> camera
        folder = fitter.write_result(face, model, args.output)
        print(f"face {face.face_index}: landmark error {face.fit.error_px:.2f} px, focal {cam.K[0, 0]:.0f} px, "
              f"identity |alpha| {np.linalg.norm(face.identity):.2f}, mesh {face.vertices.shape} mm -> {folder}")
        if face.fine is not None:
            print(f"  fine stage: photometric RMS {face.fine.photometric_rms_before:.4f} -> "
                  f"{face.fine.photometric_rms_after:.4f} in {face.fine.seconds:.2f} s")


if __name__ == "__main__":
    main()
