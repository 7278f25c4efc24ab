"""recbole-hyper: Mamba, mixture-of-experts and hyperbolic sequential recommenders for RecBole.

Importing the package registers its models with RecBole, so both
``python run_recbole_hyper.py --model=Mamba4Rec`` and RecBole's own pipeline
(``recbole.quick_start.run_recbole(model='Mamba4Rec', ...)``) find them.

The package, from the bottom up: ``ops`` (the selective scan, blocked losses)
-> ``layers`` (Mamba block, Mamba layer, MoE, RoPE, Lorentz ops, graph
encoders) -> ``models`` (the four recommenders); around them ``config``,
``data``, ``training`` and ``serving``, the model list in ``registry``,
RecBole/torch fixes in ``compat``, and the ``recbole-hyper`` command in ``cli``.
"""

import warnings as _warnings

from recbole_hyper.compat import check_stack as _check_stack
from recbole_hyper.compat import patch_stack as _patch_stack
from recbole_hyper.compat import silence_known_warnings as _silence_known_warnings

_check_stack()
_patch_stack()
_silence_known_warnings()

from recbole_hyper.compat import load_checkpoint  # noqa: E402
from recbole_hyper.config import PluginConfig, install_config_hook  # noqa: E402
from recbole_hyper.ops.scan import mamba_ssm_available, selective_scan  # noqa: E402
from recbole_hyper.registry import MODELS, get_model_class, register_all  # noqa: E402

install_config_hook()
register_all()

from recbole_hyper.quick_start import load_data_and_model, run, run_recbole_hyper  # noqa: E402
from recbole_hyper.serving import Recommender  # noqa: E402

# The model classes, by their registered names (Mamba4Rec, HyMoERec, HMamba, HM2Rec).
globals().update({_name: get_model_class(_name) for _name in MODELS})

__version__ = "0.2.0"

__all__ = [
    "selective_scan",
    "mamba_ssm_available",
    *MODELS,
    "Recommender",
    "PluginConfig",
    "run",
    "run_recbole_hyper",
    "load_data_and_model",
    "load_checkpoint",
    "get_model_class",
    "MODELS",
]

# Names of version 0.1 -> (module, name) now; still importable from the package, with a warning.
_RENAMED = {
    "HyperConfig": ("recbole_hyper.config", "PluginConfig"),
    "HyperSequentialRecommender": ("recbole_hyper.models.base", "MambaSequentialRecommender"),
    "HyperTrainer": ("recbole_hyper.training.trainer", "PluginTrainer"),
    "HyperSequentialDataset": ("recbole_hyper.data", "PluginSequentialDataset"),
}


def __getattr__(name):
    if name in _RENAMED:
        import importlib

        module, new = _RENAMED[name]
        _warnings.warn(f"recbole_hyper.{name} is now {module}.{new}.", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(module), new)
    raise AttributeError(f"module 'recbole_hyper' has no attribute '{name}'")
