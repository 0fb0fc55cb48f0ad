"""facefit: classical, optimisation-based 3D face reconstruction (library namespace `fitter`).

The Python API (see the README's "Python" section and examples/api_*.py):

    model = fitter.PreparedModel.load("ict")          # a face model and its derived state, loaded once
    faces = fitter.fit_photo("photo.jpg", model)       # [FaceResult]: .vertices (N, 3) mm, .fit.camera, ...
    fitter.write_result(faces[0], model, "out")        # mesh.obj, texture.png, params.json, overlay, preview
    reg = fitter.register_rgbd(model, color, depth, K) # Registration: .vertices, .s_morph, .report
    reg, camera = fitter.register_scan(model, fitter.read_scan("scan.obj"))
    fitter.evaluate_mesh(model, reg.vertices, scan)    # MICC-protocol error, mm
    res = fitter.reconstruct_video(model, "video.mjpg")  # MultiViewResult: .neutral (N, 3) mm, .joint, .records
    fitter.write_multiview(res, model, "out/video")      # identity.obj, texture.png, params.json, frames.png
    cap = fitter.RegisteredCapture.of(model, "name", color, depth, K, reg)  # or fitter.load_registered_capture
    s = fitter.synthesize(model, fitter.prepare_source(model, cap), 45, 0)  # Sample: .image, .invented, labels

The entry points are imported on first use, so `import fitter` stays light.
"""
import importlib

from .errors import FacefitError, InputError, ModelInstallError, ModelNotInstalledError, NoFaceError, RenderBackendError

__version__ = "0.1.0"

_API = {  # name -> module that defines it
    "PreparedModel": "prepared",
    "fit_photo": "photo.pipeline", "write_result": "photo.pipeline", "FaceResult": "photo.pipeline",
    "register_rgbd": "registration.register", "register_scan": "registration.register",
    "write_registration": "registration.register", "read_depth": "registration.register",
    "read_intrinsics": "registration.register", "Registration": "registration.register",
    "read_scan": "registration.scan", "Scan": "registration.scan",
    "read_image": "io",
    "evaluate_mesh": "registration.evaluate",
    "reconstruct_video": "video", "reconstruct_photos": "video", "write_multiview": "video",
    "MultiViewResult": "video",
    "bundle_adjust": "video.bundle", "BundleView": "video.bundle",
    "run_batch": "batch", "WorkItem": "batch",
    "RegisteredCapture": "registration.capture", "load_registered_capture": "registration.capture",
    "register_capture": "registration.capture",
    "prepare_source": "augment.sample", "synthesize": "augment.sample", "Sample": "augment.sample",
}

__all__ = ["FacefitError", "InputError", "ModelInstallError", "ModelNotInstalledError", "NoFaceError",
           "RenderBackendError", "__version__", *_API]


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fitter' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_API))
