"""Detect MediaPipe landmarks and parse the face of a photo; writes an overlay PNG.

    python examples/parse_photo.py PHOTO [-o parsed.png] [--all-faces]

Default photo: matplotlib's sample portrait of Grace Hopper (installed with the dependencies).
"""
import argparse
from pathlib import Path

import numpy as np

from fitter.detection import landmarks as lmk
from fitter.detection.segment import colorize, parse_face, person_mask
from fitter.geometry.draw import draw_points
from fitter.io import read_image, write_image_atomic


def main():
    import matplotlib.cbook

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo", nargs="?", default=str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    ap.add_argument("-o", "--output", default="parsed.png")
    ap.add_argument("--all-faces", action="store_true")
    args = ap.parse_args()
    img = read_image(args.photo)
    person = person_mask(img)
    out = img.copy()
    for face in lmk.detect_landmarks(img, all_faces=args.all_faces):
        labels = parse_face(img, face, person)
        m = labels > 0
        out[m] = (0.5 * out[m] + 0.5 * colorize(labels)[m]).astype(np.uint8)
        out = draw_points(out, face.points, (0, 255, 0), radius=max(1.0, face.interocular() / 120))
        print(f"face box {np.round(face.box, 1).tolist()}  interocular {face.interocular():.1f} px")
    write_image_atomic(args.output, out)
    print(f"wrote {Path(args.output).resolve()}")


if __name__ == "__main__":
    main()
