"""Multi-view reconstruction: videos and several photos of one person (see fitter.video.reconstruct)."""
from .reconstruct import MultiViewResult, reconstruct_photos, reconstruct_video, write_multiview

__all__ = ["MultiViewResult", "reconstruct_photos", "reconstruct_video", "write_multiview"]
