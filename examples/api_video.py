"""Reconstruct one person from a video (or from several photos of them) from Python.

    python examples/api_video.py VIDEO -o out_video          # a video file or a folder of frames
    python examples/api_video.py PHOTO PHOTO ... -o out_video  # photos of one person

Prints the frames fitted and dropped, each fitted frame's yaw and landmark error, what the refinement beyond
landmarks did (or why it declined), and where the files went.
"""
import argparse
from pathlib import Path

import fitter
from fitter.geometry.camera import yaw_of_rotation
from fitter.video.frames import is_video_source


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("-o", "--output", default="out_video")
    args = ap.parse_args()
    model = fitter.PreparedModel.load("ict")
    if len(args.inputs) == 1 and is_video_source(args.inputs[0]):
        res = fitter.reconstruct_video(model, args.inputs[0])
    else:
        res = fitter.reconstruct_photos(model, args.inputs)
    for view, im in zip(res.kept_views, res.joint.fit.images):
        print(f"frame {view.index}: yaw {yaw_of_rotation(im.camera.R):+.0f} deg, landmark error "
              f"{100 * im.error_iod:.2f} % of interocular")
    for j, reason in res.joint.dropped.items():
        print(f"frame {res.views[j].index} dropped: {reason}")
    ms = res.refinement["model_space"]
    if ms["applied"]:
        last = ms["rounds"][-1]
        med = res.refinement["medium"]
        med = ("applied" if med.get("applied") else f"declined: {med.get('reason')}") if isinstance(med, dict) else med
        print(f"refined by {last['tracks']} tracks ({last['sift_tracks']} SIFT, {last['flow_tracks']} followed through "
              f"the video, {last['wide_tracks']} model-guided): track error "
              f"{ms['rounds'][0]['feature_error_px_before']:.2f} -> {last['feature_error_px']:.2f} px; medium stage {med}")
    else:
        print(f"not refined beyond the landmarks: {ms['reason']}")
    folder = fitter.write_multiview(res, model, Path(args.output) / res.name)
    print(f"{len(res.records)} frames scanned, {len(res.joint.kept)} fitted -> {folder}")


if __name__ == "__main__":
    main()
