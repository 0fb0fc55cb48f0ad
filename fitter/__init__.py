"""facefit: classical, optimisation-based 3D face reconstruction (library namespace `fitter`)."""
from .errors import FacefitError, InputError, ModelInstallError, ModelNotInstalledError, NoFaceError, RenderBackendError

__version__ = "0.1.0"
__all__ = ["FacefitError", "InputError", "ModelInstallError", "ModelNotInstalledError", "NoFaceError",
           "RenderBackendError", "__version__"]
