"""The click group class of every `facefit` command group."""
import os
import signal
import sys

import click

from fitter.errors import FacefitError


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
