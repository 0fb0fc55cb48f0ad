"""Project exceptions. Each carries a one-line, actionable message; the CLI prints it and exits non-zero."""


class FacefitError(Exception):
    """Base class for every error a user can cause or fix."""

    exit_code = 2


class InputError(FacefitError):
    """An input file or argument is unreadable, malformed or inconsistent."""


class NoFaceError(FacefitError):
    """The landmark detector found no face in an image."""

    exit_code = 3


class ModelNotInstalledError(FacefitError):
    """A face model was asked for that is not in the model store."""


class ModelInstallError(FacefitError):
    """Installing a face model failed (bad archive, wrong files, checksum mismatch, download error)."""


class RenderBackendError(FacefitError):
    """No headless OpenGL (EGL) context could be created."""


def one_line(e: BaseException):
    """An exception as one line: the project's message, or the type and the first line of the text."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, FacefitError) else f"{type(e).__name__}: {text}" if text else type(e).__name__
