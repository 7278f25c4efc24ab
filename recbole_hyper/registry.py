"""Registration of the plugin's models with RecBole.

RecBole finds a model by name: ``recbole.utils.get_model(name)`` looks for a
module ``recbole.model.<kind>.<name.lower()>``, its trainer is
``recbole.trainer.<Name>Trainer`` and its dataset class
``recbole.data.dataset.<Name>Dataset`` when they exist.  Registering a model
places its module in ``sys.modules`` under that name and sets the trainer and
dataset attributes, so ``get_model``, ``run_recbole`` and
``load_data_and_model`` find it.  This
happens when ``recbole_hyper`` is imported (also in processes spawned for
multi-GPU training).

To add a model, add one line to :data:`MODELS`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import sys
from typing import Dict, List

__all__ = [
    "MODELS",
    "BASELINES",
    "register_all",
    "is_plugin_model",
    "plugin_models",
    "get_model_class",
    "UnknownModelError",
]

# Model name -> module that defines a class of that name.
MODELS: Dict[str, str] = {
    "Mamba4Rec": "recbole_hyper.models.mamba4rec",
    "HyMoERec": "recbole_hyper.models.hymoerec",
    "HMamba": "recbole_hyper.models.hmamba",
    "HM2Rec": "recbole_hyper.models.hm2rec",
}

# RecBole's own sequential models the benchmarks put beside the plugin's (the
# first plugin model is compared with SASRec, the others with the first).
BASELINES = ("SASRec", "GRU4Rec", "NARM", "BERT4Rec")

_RECBOLE_KINDS = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


class UnknownModelError(ValueError):
    """No plugin or RecBole model has this name."""


def is_plugin_model(name) -> bool:
    return isinstance(name, str) and name in MODELS


def plugin_models() -> List[str]:
    return list(MODELS)


def _register(name: str, module_path: str) -> None:
    import recbole.data.dataset
    import recbole.trainer

    from recbole_hyper.compat import import_recbole_models
    from recbole_hyper.data import PluginSequentialDataset
    from recbole_hyper.training.trainer import PluginTrainer

    module = importlib.import_module(module_path)
    cls = getattr(module, name)
    package = import_recbole_models()
    sys.modules[f"{package.__name__}.{name.lower()}"] = module
    setattr(package, name, cls)
    setattr(recbole.trainer, f"{name}Trainer", PluginTrainer)
    setattr(recbole.data.dataset, f"{name}Dataset", PluginSequentialDataset)


def register_all() -> None:
    """Register every model of :data:`MODELS` (idempotent)."""
    for name, module_path in MODELS.items():
        _register(name, module_path)


def _recbole_model_names() -> Dict[str, str]:
    """RecBole's model module names (lower case) -> kind, without importing them."""
    names = {}
    for kind in _RECBOLE_KINDS:
        spec = importlib.util.find_spec(f"recbole.model.{kind}")
        if spec is None or not spec.submodule_search_locations:
            continue
        for info in pkgutil.iter_modules(spec.submodule_search_locations):
            names[info.name] = kind
    return names


def get_model_class(name: str):
    """The model class for ``name``: a plugin model or one of RecBole's.

    Unlike ``recbole.utils.get_model``, an unknown name gives an
    :class:`UnknownModelError` with close matches, instead of an unrelated
    import error from RecBole's optional lightgbm/xgboost models.
    """
    if not isinstance(name, str):
        return name
    if name in MODELS:
        return getattr(importlib.import_module(MODELS[name]), name)
    kind = _recbole_model_names().get(name.lower())
    if kind is not None:
        module = importlib.import_module(f"recbole.model.{kind}.{name.lower()}")
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    # The plugin's models are also attributes of RecBole's package once
    # registered: list each name once.
    known = list(dict.fromkeys(plugin_models() + sorted(_recbole_class_names())))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model '{name}'.{hint}\n"
        f"recbole-hyper models: {', '.join(plugin_models())}. "
        f"RecBole's models are listed at https://recbole.io/model_list.html "
        f"(names are case-sensitive, e.g. SASRec, GRU4Rec)."
    )


def _recbole_class_names() -> List[str]:
    """Class names of RecBole's models (imports RecBole's model packages)."""
    from recbole_hyper.compat import import_recbole_models

    import_recbole_models()
    names = []
    for kind in _RECBOLE_KINDS:
        package = importlib.import_module(f"recbole.model.{kind}")
        names += [n for n in vars(package) if n[:1].isupper() and isinstance(vars(package)[n], type)]
    return names
