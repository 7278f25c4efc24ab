"""recbole-hyper: Mamba, mixture-of-experts and hyperbolic sequential recommenders for RecBole."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

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
    python_requires=">=3.9,<3.12",  # RecBole 1.2.1 needs ray<=2.6.3, which has no wheels for 3.12+
    packages=find_packages(include=["recbole_hyper", "recbole_hyper.*"])
    + ["recbole_hyper.properties"],
    # The yaml defaults live in the top-level properties/ folder (RecBole's
    # layout), mapped to the package recbole_hyper.properties: in a wheel it is
    # recbole_hyper/properties/, in an editable install the checkout's folder.
    # Both are found by recbole_hyper.config.properties_dir().
    package_dir={"recbole_hyper.properties": "properties"},
    package_data={"recbole_hyper.properties": ["**/*.yaml"]},
    install_requires=[
        "recbole==1.2.1",
        "torch>=2.6",
        "geoopt>=0.5",
        "scipy>=1.10",
        "pyyaml>=6",
        # RecBole's HyperTuning (recbole-hyper tune) searches with hyperopt; its exhaustive
        # search passes a RandomState, which hyperopt >= 0.2.7 no longer accepts (RecBole pins 0.2.5).
        "hyperopt==0.2.5",
        # RecBole 1.2.1 predates NumPy 2 and pandas 3 (see README, "Supported stack").
        "numpy>=1.24,<2",
        "pandas>=2.0,<3",
        # ray 2.6.3, which recbole.quick_start imports, needs pkg_resources
        # (removed in setuptools 82); torch needs setuptools>=77.
        "setuptools>=77,<82",
    ],
    extras_require={
        "test": ["pytest>=7", "ruff==0.17.6"],
        "plot": ["matplotlib>=3.7"],
        "cuda": ["mamba-ssm>=2.2", "causal-conv1d>=1.4"],
    },
    entry_points={"console_scripts": ["recbole-hyper=recbole_hyper.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
