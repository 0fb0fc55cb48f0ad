"""`facefit bench ...`: the benchmarks (fitter.bench), whose results are recorded in BENCHMARKS.md."""
import json

import click

from .common import FacefitGroup


def _progress(message):
    """Benchmark progress lines go to stderr; the results (JSON) to stdout."""
    click.echo(message, err=True)


def _scans_option(what):
    """--scans: the folder with the scan-* ground truth, and what the benchmark does with it."""
    return click.option("--scans", "scan_dir", type=click.Path(file_okay=False), default=None,
                        help=f"Folder with the scan-* ground truth (e.g. ../shared/data): {what}.")


_model_option = click.option("--model", "name", default="ict", show_default=True)
_json_option = click.option("--json", "as_json", is_flag=True, help="One line of JSON.")


def _emit(result, as_json):
    click.echo(json.dumps(result, indent=None if as_json else 2))


@click.group(cls=FacefitGroup)
def bench():
    """Benchmarks (speed and accuracy); results are recorded in BENCHMARKS.md."""


@bench.command("foundation")
@click.option("--model", "name", default="ict", show_default=True)
@click.option("--repeats", default=20, show_default=True)
@click.option("--install-from", type=click.Path(exists=True), default=None,
              help="Also time a full install from this archive (into a temporary model store).")
@click.option("--json", "as_json", is_flag=True)
def bench_foundation(name, repeats, install_from, as_json):
    """Render time of the model at 512x512 (and optionally the install time)."""
    from fitter.bench.foundation import foundation

    res = foundation(name, repeats, install_from)
    click.echo(json.dumps(res, indent=2) if as_json else "\n".join(f"{k}: {v}" for k, v in res.items()))


@bench.command("coarse")
@_model_option
@click.option("--identities", default=6, show_default=True, help="Synthetic identities (x 15 poses each).")
@_scans_option("also score Florence-style renders of the scans")
@click.option("--no-eos", is_flag=True, help="Leave out the eos peer.")
@_json_option
def bench_coarse(name, identities, scan_dir, no_eos, as_json):
    """Coarse fit on synthetic ground truth (and real scans), with eos side by side."""
    from fitter import bench as B  # noqa: N812

    res = {"synthetic": B.coarse(name, identities, with_eos=not no_eos, log=_progress)}
    if scan_dir:
        res["scans"] = B.scans(name, scan_dir, with_eos=not no_eos, log=_progress)
    _emit(res, as_json)


@bench.command("medium")
@_model_option
@click.option("--identities", default=6, show_default=True, help="Out-of-span synthetic identities (5 views each).")
@_scans_option("coarse vs medium on their renders")
@click.option("--repeats", default=30, show_default=True)
@_json_option
def bench_medium(name, identities, scan_dir, repeats, as_json):
    """Medium stage: solve speed against spsolve and libigl; coarse vs coarse+medium accuracy."""
    from fitter import bench as B  # noqa: N812

    res = {"speed": B.medium_speed(name, repeats, log=_progress)}
    if identities:
        res["synthetic_out_of_span"] = B.medium_synthetic(name, identities, log=_progress)
    if scan_dir:
        res["scans"] = B.scans(name, scan_dir, with_eos=False, log=_progress)
    _emit(res, as_json)


@bench.command("register")
@_model_option
@click.option("--captures", default=8, show_default=True, help="Synthetic RGB-D captures.")
@_scans_option("scan and rendered-depth registration")
@click.option("--no-trimesh", is_flag=True, help="Skip the trimesh nricp_amberg peer.")
@click.option("--schedule", type=click.Choice(["fast", "accurate"]), default="fast", show_default=True)
@_json_option
def bench_register(name, captures, scan_dir, no_trimesh, schedule, as_json):
    """RGB-D registration: geometry-only NICP vs T-ICP on synthetic captures; scans; trimesh peer."""
    from fitter import bench as B  # noqa: N812

    res = {}
    if captures:
        res["synthetic"] = B.register_synthetic(name, captures, schedule=schedule, log=_progress)
    if scan_dir:
        res["scans"] = B.register_scans(name, scan_dir, with_trimesh=not no_trimesh, schedule=schedule,
                                        log=_progress)
    _emit(res, as_json)


@bench.command("fine")
@_model_option
@click.option("--faces", default=4, show_default=True,
              help="Synthetic faces with fine detail (x 3 views x with/without specular).")
@_scans_option("medium vs fine (MICC protocol) on their renders")
@_json_option
def bench_fine(name, faces, scan_dir, as_json):
    """Fine stage: normal and depth error of medium vs fine on synthetic detail; time split between
    Python callbacks and Ceres at a 256² crop; MICC error medium vs fine on scan renders."""
    from fitter import bench as B  # noqa: N812

    res = {}
    if faces:
        res["synthetic_detail"] = B.summarise_fine(B.fine_synthetic(name, faces, log=_progress))
    if scan_dir:
        res["scans"] = B.fine_scans(name, scan_dir, log=_progress)
    _emit(res, as_json)


@bench.command("ceres-bridge")
@click.option("--size", default=256, show_default=True, help="Crop size (px) of the lit-sphere problem.")
@click.option("--iterations", default=5, show_default=True, help="Ceres iterations (both bridges).")
@_json_option
def bench_ceres_bridge(size, iterations, as_json):
    """The fine stage's Ceres bridge against one through pyceres' public API only, on the same problem:
    wall time, Ceres's time split, and how far apart their solutions are."""
    from fitter.bench.ceres_bridge import run_ceres_bridge

    _emit(run_ceres_bridge(size, iterations, log=_progress), as_json)


@bench.command("video")
@_model_option
@_scans_option("filmed as the mini MICC dataset's subjects")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where the mini MICC dataset is, or is built (default: a temporary folder).")
@click.option("--seconds", default=10.0, show_default=True, help="Video length.")
@click.option("--part", type=click.Choice(["all", "accuracy", "batch"]), default="all", show_default=True,
              help="accuracy: accuracy and time per video; batch: the 1/2-worker and dask-process batch timings.")
@_json_option
def bench_video(name, scan_dir, root, seconds, part, as_json):
    """Video reconstruction on the mini MICC dataset: accuracy vs single frames and the mean face, time per
    video by step, batch throughput with 1 and 2 workers and through dask scheduler/worker processes."""
    from fitter.bench.video import video

    if scan_dir is None and root is None:
        raise click.UsageError("give --scans ../shared/data (to build the dataset) or --root of a built one")
    _emit(video(name, scan_dir, root, seconds, accuracy=part != "batch", batch=part != "accuracy", log=_progress),
          as_json)


@bench.command("refine")
@_model_option
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="The mini MICC dataset (built by `facefit bench video --root`); needed by --part micc.")
@click.option("--part", type=click.Choice(["all", "synthetic", "video", "micc", "tracks", "pairs"]), default="all",
              show_default=True,
              help="synthetic: an identity with and without texture, exact truth and cameras; video: the same "
                   "through the whole video path; micc: the mini MICC videos; tracks: the tracks of the "
                   "skin-textured videos against their true surface and cameras (needs --root and --scans); "
                   "pairs: two photos of each skin-textured subject 30-60° apart.")
@_scans_option("the skin-textured subjects of --part tracks and pairs")
@_json_option
def bench_refine(name, root, part, scan_dir, as_json):
    """Beyond landmarks: the landmark joint fit, + the model-space refinement by feature tracks (SIFT and
    points followed through the video), + the multi-view medium stage — vertex error (synthetic, with and
    without skin texture), MICC and vertex error per setting (mini MICC videos, skin-textured subjects
    among them), photo pairs, time of each step."""
    from fitter.bench.refine import refine_bench

    if part in ("all", "micc") and root is None:
        raise click.UsageError("--part micc (and all) needs --root of a mini MICC dataset (facefit bench video --root)")
    _emit(refine_bench(name, root, part, scan_dir, log=_progress), as_json)


@bench.command("augment")
@_model_option
@_scans_option("realism against direct renders of the scans, and the dataset-build captures")
@click.option("--part", type=click.Choice(["all", "labels", "realism", "speed", "build"]), default="all",
              show_default=True)
@_json_option
def bench_augment(name, scan_dir, part, as_json):
    """Augmentation: label accuracy by yaw (synthetic truth), realism (scans), MediaPipe NME on the samples,
    samples per second per core at 512², and dataset build on 1 and 2 workers."""
    from fitter.bench.augment import augment_bench

    _emit(augment_bench(name, scan_dir, part, log=_progress), as_json)


@bench.command("report")
@click.option("--from", "micc_out", required=True, type=click.Path(file_okay=False),
              help="A `facefit micc` output folder; its scored videos are copied up to --videos.")
@click.option("--videos", default=159, show_default=True, help="Videos in the report (MICC: 159).")
@_json_option
def bench_report(micc_out, videos, as_json):
    """Time to write and to open report.html for a MICC-sized batch (fitter/bench/report.py)."""
    from fitter.bench.report import report_bench

    _emit(report_bench(micc_out, videos, log=_progress), as_json)
