"""dreamlmc: text-to-3D with SDS and LMC-SDS guidance; runs on the CPU with a built-in prior."""
from setuptools import setup

setup(
    name="dreamlmc",
    version="0.1.0",
    description="Text-to-3D with Score Distillation Sampling and Learned Manifold Corrective (LMC-SDS)",
    python_requires=">=3.10",
    packages=["dreamlmc", "dreamlmc.shapes", "dreamlmc.renderers", "dreamlmc.guidance", "dreamlmc.guidance.backends",
              "dreamlmc.assets"],
    package_dir={"dreamlmc": "dreamlmc", "dreamlmc.renderers": "renderers", "dreamlmc.guidance": "guidance",
                 "dreamlmc.guidance.backends": "guidance/backends"},
    package_data={"dreamlmc.assets": ["*.safetensors", "*.json", "web/*"], "dreamlmc.renderers": ["csrc/*.cpp"]},
    include_package_data=True,
    # torch is installed first and pinned by the README/CI command (pip install torch==2.13.0) so that pip keeps
    # the CPU build; a range here lets that build satisfy it.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "diffusers==0.42.1",
        "transformers==5.24.0",
        "safetensors==0.8.0",
        "trimesh==5.2.0",
        "pygltflib==1.16.5",
        "imageio==2.38.1",
        "imageio-ffmpeg==0.8.1",
        "scikit-image==0.26.0",
        "scipy>=1.10",
        "pillow>=10",
        "tqdm==4.70.1",
        "pyyaml>=6.0",
        "xatlas==0.0.11",
        "fast-simplification==0.2.0",
        "ninja==1.13.2",  # builds the fused CPU kernels at first use (torch.utils.cpp_extension)
    ],
    # Ray runs `dreamlmc batch`; the test command installs it so that the batch runner is tested. tiny-cuda-nn is
    # used on CUDA when importable (it is built from source, see the README); nerfacc is not used (README, renderer).
    extras_require={"test": ["pytest>=8", "hypothesis==6.155.2", "ray==2.60.0", "playwright==1.65.2"], "batch": ["ray==2.60.0"]},
    entry_points={"console_scripts": ["dreamlmc=dreamlmc.cli:main"]},
)
