"""The `facefit` command: the top-level group, one module per command group beside it (model, photo, video
and MICC, registration and datasets, evaluate, bench), every error turned into one line and an exit code
(cli.common)."""
import click

from fitter import __version__

from .bench import bench
from .common import FacefitGroup, handle_sigterm
from .evaluate import eval_cmd
from .model import model
from .photo import fit_cmd
from .registration import augment_cmd, dataset, register_cmd
from .video import micc_cmd, report_cmd, video_cmd


@click.group(cls=FacefitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facefit")
def cli():
    """facefit: classical 3D face reconstruction (3DMM fitting, Laplacian deformation, T-ICP, SFS).

    Models are stored under $FACEFIT_HOME (default ~/.cache/facefit).
    """


for command in (model, fit_cmd, video_cmd, micc_cmd, register_cmd, augment_cmd, dataset, report_cmd, eval_cmd,
                bench):
    cli.add_command(command)


def main():
    handle_sigterm()
    cli(prog_name="facefit")


if __name__ == "__main__":
    main()
