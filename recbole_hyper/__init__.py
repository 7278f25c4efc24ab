"""recbole-hyper: Mamba, mixture-of-experts and hyperbolic sequential recommenders for RecBole.

Importing the package registers its models with RecBole, so both
``python run_recbole_hyper.py --model=Mamba4Rec`` and RecBole's own pipeline
(``recbole.quick_start.run_recbole(model='Mamba4Rec', ...)``) find them.
"""

from recbole_hyper.compat import check_stack as _check_stack
from recbole_hyper.compat import silence_known_warnings as _silence_known_warnings

_check_stack()
_silence_known_warnings()

from recbole_hyper.compat import load_checkpoint  # noqa: E402
from recbole_hyper.config import HyperConfig, install_config_hook  # noqa: E402
from recbole_hyper.ops.scan import mamba_ssm_available, selective_scan  # noqa: E402
from recbole_hyper.registry import MODELS, get_model_class, register_all  # noqa: E402

install_config_hook()
register_all()

from recbole_hyper.quick_start import load_data_and_model, run, run_recbole_hyper  # noqa: E402
from recbole_hyper.serving import Recommender  # noqa: E402

# The model classes, by their registered names (Mamba4Rec, HyMoERec, HMamba, HM2Rec).
globals().update({_name: get_model_class(_name) for _name in MODELS})

__version__ = "0.1.0"

__all__ = [
    "selective_scan",
    "mamba_ssm_available",
    *MODELS,
    "Recommender",
    "HyperConfig",
    "run",
    "run_recbole_hyper",
    "load_data_and_model",
    "load_checkpoint",
    "get_model_class",
    "MODELS",
]
