"""recbole-hyper: Mamba, mixture-of-experts and hyperbolic sequential recommenders for RecBole."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

# What RecBole 1.2.1 imports on the paths recbole-hyper and its stock pipeline use (its own
# requirements minus ray, which recbole_hyper.compat does without).
RECBOLE_IMPORTS = [
    "tqdm>=4.48.2",
    "colorlog>=4.7.2",
    "colorama>=0.4.4",
    "scikit-learn>=0.23.2",
    "tensorboard>=2.5",
    "thop>=0.1.1.post2207130030",
    "tabulate>=0.8.10",
    "texttable>=0.9",
    "psutil>=5.9",
    "plotly>=4",
]

setup(
    name="recbole-hyper",
    version="0.2.0",
    description=(
        "RecBole plugin: Mamba4Rec, HyMoERec, HMamba and HM2Rec sequential recommenders "
        "with a fast pure-PyTorch selective scan"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["recbole_hyper", "recbole_hyper.*"])
    + ["recbole_hyper.properties"],
    # The yaml defaults live in the top-level properties/ folder (RecBole's
    # layout), mapped to the package recbole_hyper.properties: in a wheel it is
    # recbole_hyper/properties/, in an editable install the checkout's folder.
    # Both are found by recbole_hyper.config.properties_dir().
    package_dir={"recbole_hyper.properties": "properties"},
    package_data={"recbole_hyper.properties": ["**/*.yaml"]},
    install_requires=[
        # RecBole 1.2.1 pins ray<=2.6.3, which has no wheels for Python 3.12+: there, install
        # RecBole with `pip install --no-deps recbole==1.2.1` first (README); the packages it
        # really imports are listed below for every Python.
        "recbole==1.2.1; python_version < '3.12'",
        *RECBOLE_IMPORTS,
        "torch>=2.6",
        "geoopt>=0.5",
        "scipy>=1.10",
        "pyyaml>=6",
        # RecBole's HyperTuning (recbole-hyper tune) searches with hyperopt; its exhaustive
        # search passes a RandomState, which hyperopt >= 0.2.7 no longer accepts (RecBole pins 0.2.5).
        "hyperopt==0.2.5",
        # NumPy 2, pandas 3 and SciPy's removals are worked around in recbole_hyper.compat.
        "numpy>=1.24",
        "pandas>=2.0",
    ],
    extras_require={
        # Triton on Linux x86-64 lets the tests run the Triton scan kernels in its CPU interpreter.
        "test": ["pytest>=7", "ruff==0.17.6", 'triton>=3.2; platform_system == "Linux" and platform_machine == "x86_64"'],
        "plot": ["matplotlib>=3.7"],
        "cuda": ["mamba-ssm>=2.2", "causal-conv1d>=1.4"],
        # The Triton scan backend (PyTorch's CUDA builds already bring Triton).
        "triton": ["triton>=3.2"],
    },
    entry_points={"console_scripts": ["recbole-hyper=recbole_hyper.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
