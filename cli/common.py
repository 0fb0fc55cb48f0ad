"""What every `facefit` command shares: the click group class that turns errors into one line and an exit
code (the README's exit-code table), SIGTERM handled as Ctrl-C, and the option groups and batch helpers
that several commands take."""
import os
import signal
import sys

import click

from fitter.errors import FacefitError

model_option = click.option("--model", "model_name", default="ict", show_default=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like SIGINT's KeyboardInterrupt so that the same clean-up runs."""


def _raise_terminated(signum, frame):
    raise Terminated()


def handle_sigterm():
    """Let SIGTERM end the command as SIGINT does: one line, exit 143, temporary files removed."""
    signal.signal(signal.SIGTERM, _raise_terminated)


class FacefitGroup(click.Group):
    """Turns project errors into `facefit: error: ...` on stderr and the error's exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FacefitError as e:
            click.echo(f"facefit: error: {e}", err=True)
            sys.exit(e.exit_code)
        except Terminated:
            click.echo("facefit: terminated", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("facefit: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # an internal bug: still one line, with a way to get the traceback
            if os.environ.get("FACEFIT_DEBUG"):
                raise
            click.echo(f"facefit: internal error: {e.__class__.__name__}: {e} (set FACEFIT_DEBUG=1 for the traceback)",
                       err=True)
            sys.exit(1)


def as_usage_error(check):
    """A click callback from a library check: its InputError becomes a usage error (exit 2)."""
    def callback(ctx, param, value):
        from fitter.errors import InputError

        try:
            return check(value)
        except InputError as e:
            raise click.BadParameter(str(e)) from None
    return callback


def check_focal_option(value):
    from fitter.photo.pipeline import check_focal

    return check_focal(value)


def refine_options(f):
    """--no-refine and --no-medium, shared by the multi-view commands."""
    f = click.option("--medium/--no-medium", "medium", default=True,
                     help="After the refinement, the multi-view medium stage: a plane sweep along the normals and "
                          "the mesh moved towards it, beyond the model's space. On by default; it moves the mesh "
                          "only where its sweep is confident on enough of the face (skin texture), and says in "
                          "params.json why it did not.")(f)
    f = click.option("--no-refine", "refine", is_flag=True, default=True, flag_value=False,
                     help="Skip the model-space refinement by feature tracks across the views: the landmark "
                          "joint fit only. It is skipped by itself, with the reason in "
                          "params.json, where the views give too few tracks (faces with little texture).")(f)
    return f


def batch_options(f):
    """--workers and --scheduler, shared by the batch commands."""
    f = click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="An existing Dask cluster: tcp://HOST:8786 or a scheduler file (default: a local "
                          "cluster).")(f)
    f = click.option("--workers", type=click.IntRange(min=0), default=None,
                     help="Local worker processes (default: as many as cores, at most one per item; 0: run "
                          "in this process).")(f)
    return f


def angle_options(f):
    """--yaws, --pitches and --format, shared by augment and dataset build."""
    f = click.option("--format", "fmt", type=click.Choice(["default", "300wlp"]), default="default", show_default=True,
                     help="300wlp: also write each sample's 300W-LP .mat (roi, pt2d, Pose_Para).")(f)
    f = click.option("--pitches", default="-20,0,20", show_default=True,
                     help="Head pitches in degrees (|pitch| <= 25): 'a,b,c' or 'start:stop:step'.")(f)
    f = click.option("--yaws", default="-90:90:15", show_default=True,
                     help="Head yaws in degrees (|yaw| <= 90): 'a,b,c' or 'start:stop:step' (one that starts "
                          "with a minus: --yaws=-60:60:30).")(f)
    return f


def comma_list(text, option):
    """The values of a comma-separated option, each once, in order; a usage error when there is none."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise click.UsageError(f"{option}: give one or more comma-separated values")
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        stderr(f"facefit: warning: {option} names a value more than once: each runs once")
    return unique


def stderr(message):
    click.echo(message, err=True)


def write_batch_report(outdir, as_json=False):
    """OUT/report.html after a batch; a failure to write it is said in one line, not fatal to the batch."""
    from fitter.report import write_report

    try:
        path = write_report(outdir)
    except Exception as e:  # noqa: BLE001 - the batch's own outputs are written already
        if os.environ.get("FACEFIT_DEBUG"):
            raise
        from fitter.errors import one_line

        stderr(f"facefit: warning: report.html not written: {one_line(e)}")
        return
    if not as_json:
        stderr(f"facefit: report: {path}")


def batch_exit(summary, n_items):
    click.echo(f"facefit: {summary.line()}", err=True)
    for item_id, reason in summary.failed.items():
        click.echo(f"facefit: failed: {item_id}: {reason}", err=True)
    if summary.failed:
        sys.exit(3 if len(summary.failed) == n_items else 4)
