"""facefit: classical, optimisation-based 3D face reconstruction.

One import namespace, `fitter`: the library lives in fitter/, and the other top-level folders are
mapped into it - cli/ -> fitter.cli, models/ -> fitter.registry, shaders/ -> fitter.shaders.
"""
from setuptools import setup

setup(
    name="facefit",
    version="0.1.0",
    description="Classical 3D face reconstruction: 3DMM fitting, Laplacian deformation, T-ICP, SFS",
    license="MIT",
    python_requires=">=3.9,<3.13",
    packages=["fitter", "fitter.geometry", "fitter.detection", "fitter.model", "fitter.model.formats",
              "fitter.install", "fitter.photo", "fitter.photo.fine", "fitter.registration", "fitter.video",
              "fitter.augment", "fitter.datasets", "fitter.bench", "fitter.cli", "fitter.registry", "fitter.shaders"],
    package_dir={"fitter": "fitter", "fitter.cli": "cli", "fitter.registry": "models",
                 "fitter.shaders": "shaders"},
    package_data={"fitter.shaders": ["*.vert", "*.geom", "*.frag"], "fitter.registry": ["*.json"],
                  "fitter": ["report_assets/*"]},  # the batch report's template and its vendored 3-D viewer
    install_requires=[
        "numpy>=1.23,<2",           # mediapipe 0.10.21 needs numpy < 2
        "scipy>=1.10",
        "scikit-sparse>=0.4.12,<0.5",  # 0.5 needs SuiteSparse 7; Debian 12 ships 5.12
        "open3d>=0.18",
        "pyceres>=2.1",
        "moderngl>=5.8",
        "opencv-contrib-python>=4.8,<5",  # what mediapipe pulls; provides cv2 (do not add opencv-python too)
        "mediapipe==0.10.21",       # newest release that ships its models inside the wheel
        "click>=8.1",
        "tqdm>=4.60",
        "h5py>=3.8",                # BFM 2017/2019 importer
        "threadpoolctl>=3.1",       # single-threaded BLAS inside the small dense fits
        "pygltflib>=1.15",          # mesh.glb (facefit fit --mesh-format glb)
        "plyfile>=0.9,<1.1",        # mesh.ply; plyfile 1.1 needs numpy 2, which mediapipe 0.10.21 does not allow
        "dask[distributed]>=2024.1",  # the batch engine (fitter.batch): LocalCluster or an existing cluster
        "matplotlib>=3.6",          # the MICC report's box plot
    ],
    extras_require={"test": ["pytest>=7"], "bench": ["eos-py>=1.4"]},
    entry_points={"console_scripts": ["facefit=fitter.cli.main:main"]},
)
