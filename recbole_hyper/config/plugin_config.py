"""Configuration the RecBole way, with the plugin's yaml defaults.

RecBole's ``Config`` reads default yaml files only from its own package.  The
plugin ships its defaults in ``properties/``:

* ``properties/overall.yaml``: the evaluation protocol shared by the papers;
* ``properties/model/<Model>.yaml``: each model's defaults;
* ``properties/dataset/<dataset>.yaml``: dataset settings (columns, filters,
  sequence length);
* ``properties/model/<Model>/<dataset>.yaml``: a model's settings for one
  dataset (e.g. Mamba4Rec's dropout 0.4 on Amazon).

Precedence, lowest first: RecBole's own files < the plugin's overall < model <
dataset < model-on-dataset < your config files < ``config_dict`` < command line.

Two entry points use them:

* :func:`install_config_hook` extends ``Config._load_internal_config_dict``
  (the hook RecBole uses to read defaults), so a stock pipeline such as
  ``recbole.quick_start.run_recbole(model='Mamba4Rec', ...)`` gets the plugin
  defaults for the plugin's models after ``import recbole_hyper``;
* :class:`PluginConfig`, used by ``run_recbole_hyper.py``, applies the overall
  and dataset files to every model (RecBole's baselines included, so they are
  evaluated under the same protocol) and checks the configuration before any
  data is loaded.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Dict, List

from recbole.config import Config
from recbole.utils import ModelType

from recbole_hyper.config.params import TRAINER_PARAMS, HyperParameterError, Param, check_params
from recbole_hyper.config.renamed import upgrade_settings
from recbole_hyper.data.atomic_files import (
    DataError,
    DatasetNotFoundError,
    check_load_col_has_time,
    default_load_col,
    inspect_dataset,
)

__all__ = [
    "PluginConfig",
    "DataError",
    "DatasetNotFoundError",
    "properties_dir",
    "plugin_yaml_files",
    "install_config_hook",
]


def properties_dir() -> Path:
    """Folder of the plugin's yaml defaults.

    The top-level ``properties/`` folder is the package
    ``recbole_hyper.properties`` (``setup.py`` maps it): inside the wheel after
    ``pip install .``, and the checkout's folder after ``pip install -e .``.
    """
    try:
        return Path(str(resources.files("recbole_hyper.properties")))
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "recbole_hyper's properties/ folder is missing; reinstall the package "
            "(pip install recbole-hyper, or pip install -e . from a checkout)."
        ) from exc


def plugin_yaml_files(model: str, dataset: str, include_model: bool = True) -> List[Path]:
    """The plugin's default files for (model, dataset), lowest precedence first."""
    root = properties_dir()
    files = [root / "overall.yaml"]
    if include_model:
        files.append(root / "model" / f"{model}.yaml")
    files.append(root / "dataset" / f"{dataset}.yaml")
    if include_model:
        files.append(root / "model" / model / f"{dataset}.yaml")
    return [f for f in files if f.is_file()]


_DEFAULT_NEG_SAMPLING = {
    "distribution": "uniform",
    "sample_num": 1,
    "alpha": 1.0,
    "dynamic": False,
    "candidate_num": 0,
}


def _load_plugin_defaults(config: Config, model: str, dataset: str, include_model: bool) -> None:
    for path in plugin_yaml_files(model, dataset, include_model):
        loaded = config._update_internal_config_dict(str(path)) or {}
        if path.parent.name == "dataset":
            config.parameters["Dataset"] += [
                k for k in loaded if k not in config.parameters["Dataset"]
            ]
    _harmonise_negative_sampling(config)
    _harmonise_full_sequence_batch(config)


def _harmonise_full_sequence_batch(config: Config) -> None:
    """Defaults of ``train_mode: full_sequence``.

    ``full_sequence_defaults`` (a dict in any yaml, e.g. a dataset's) holds
    settings that apply only in full_sequence mode, such as the batch size in
    windows and the learning rate; a key the user sets wins.  Without a
    ``train_batch_size`` there or from the user, a batch holds windows of up
    to L targets, so the default is divided by L to hold about as many
    targets as an augmented batch.
    """
    merged = {**config.internal_config_dict, **config.external_config_dict}
    if merged.get("train_mode") != "full_sequence":
        return
    mode_defaults = merged.get("full_sequence_defaults") or {}
    for key, value in mode_defaults.items():
        if key not in config.external_config_dict:
            config.internal_config_dict[key] = value
    if "train_batch_size" in config.external_config_dict or "train_batch_size" in mode_defaults:
        return
    L = max(1, int(merged.get("MAX_ITEM_LIST_LENGTH") or 1))
    config.internal_config_dict["train_batch_size"] = max(1, int(merged["train_batch_size"]) // L)


def _harmonise_negative_sampling(config: Config) -> None:
    """Match the default ``train_neg_sample_args`` to the loss.

    RecBole raises for CE with negative sampling and its defaults always
    sample; a user who switches ``loss_type`` should not also have to know
    about this key.  An explicit user setting is kept as is.
    """
    if "train_neg_sample_args" in config.external_config_dict:
        return
    internal = config.internal_config_dict
    loss = config.external_config_dict.get("loss_type", internal.get("loss_type"))
    if loss in ("CE", "SampledSoftmax"):  # the sampled softmax draws its own shared negatives in the model
        internal["train_neg_sample_args"] = None
    elif loss == "BPR" and internal.get("train_neg_sample_args") is None:
        internal["train_neg_sample_args"] = dict(_DEFAULT_NEG_SAMPLING)


def _check_and_complete_dataset(config: Config, dataset: str) -> None:
    """Check the dataset's .inter file and give it a usable ``load_col`` (see :mod:`recbole_hyper.data.atomic_files`)."""
    merged = {**config.internal_config_dict, **config.external_config_dict}
    # Sequential models order each user's items by time; so does any model split by time (order TO,
    # the papers' protocol), e.g. RecBole's BPR under the runner.
    by_time = (merged.get("eval_args") or {}).get("order") == "TO"
    ordered = merged.get("MODEL_TYPE") == ModelType.SEQUENTIAL or by_time
    atomic = inspect_dataset(merged, dataset, ordered)
    if atomic is None or not ordered:
        return
    time_field = merged.get("TIME_FIELD")
    if "load_col" in config.external_config_dict:
        check_load_col_has_time(merged["load_col"], time_field, dataset)
        return
    load_col = default_load_col(atomic, merged.get("load_col"), time_field)
    if load_col is not None:
        config.internal_config_dict["load_col"] = load_col


def _upgrade_renamed_settings(config: Config) -> None:
    """The user's settings under old names move to their new ones (:mod:`recbole_hyper.config.renamed`)."""
    upgrade_settings(config.external_config_dict)
    for part in ("file_config_dict", "variable_config_dict", "cmd_config_dict"):
        upgrade_settings(getattr(config, part, None) or {}, warn=False)


def install_config_hook() -> None:
    """Make RecBole's ``Config`` read the plugin's yaml for the plugin's models.

    Idempotent.  Only models registered by recbole_hyper are affected, unless
    the ``Config`` subclass sets ``plugin_defaults_for_all_models``.
    """
    if getattr(Config._load_internal_config_dict, "_recbole_hyper", False):
        return
    original = Config._load_internal_config_dict

    def _load_internal_config_dict(self, model, model_class, dataset):
        from recbole_hyper.registry import is_plugin_model

        plugin = is_plugin_model(model)
        applies = plugin or getattr(self, "plugin_defaults_for_all_models", False)
        if applies:
            _upgrade_renamed_settings(self)
        original(self, model, model_class, dataset)
        if applies:
            _load_plugin_defaults(self, model, dataset, include_model=plugin)
            _check_and_complete_dataset(self, dataset)

    _load_internal_config_dict._recbole_hyper = True
    _load_internal_config_dict.__doc__ = original.__doc__
    Config._load_internal_config_dict = _load_internal_config_dict


def _baseline_params(model: str):
    """What the runner checks for RecBole's own models."""
    from recbole_hyper.data import TRAIN_MODES
    from recbole_hyper.training.baselines import CAUSAL_BASELINES

    modes = TRAIN_MODES if model in CAUSAL_BASELINES else ("augmented",)
    return {
        **TRAINER_PARAMS,
        "loss_type": Param("str", "training loss", choices=("CE", "BPR"), optional=True),
        "train_mode": Param(
            "str",
            "full_sequence needs a causal model: " + ", ".join(CAUSAL_BASELINES) + " or the plugin's",
            choices=modes,
            optional=True,
        ),
    }


class ConfigFileError(HyperParameterError):
    """A ``--config_files`` yaml that is missing or does not parse."""


def _check_config_files(files) -> None:
    """Each config file exists and parses as yaml (RecBole would raise deep inside ``Config``)."""
    import yaml

    for name in files or []:
        path = Path(name)
        if not path.is_file():
            raise ConfigFileError(f"config file {name} not found (--config_files takes space-separated yaml files).")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigFileError(f"config file {name} is not valid yaml{at}: {reason}.") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigFileError(f"config file {name} must hold 'key: value' lines, not a {type(loaded).__name__}.")


def _recbole_model_params(model_class) -> Dict[str, Param]:
    """Type checks for RecBole's own models: each number or flag of the model's yaml keeps its type."""
    import yaml

    name = getattr(model_class, "__name__", "")
    import recbole

    path = Path(recbole.__file__).parent / "properties" / "model" / f"{name}.yaml"
    if not path.is_file():
        return {}
    defaults = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    params = {}
    for key, value in defaults.items():
        if isinstance(value, bool):
            params[key] = Param("bool", f"{name}'s setting", optional=True)
        elif isinstance(value, int):
            params[key] = Param("int", f"{name}'s setting", optional=True)
        elif isinstance(value, float):
            params[key] = Param("float", f"{name}'s setting", optional=True)
    return params


# Keys set for a run rather than read from a yaml file.
RUNTIME_KEYS = {
    "model", "dataset", "config_files", "gpu_id", "local_rank", "world_size", "ip", "port", "nproc", "offset",
    "group_offset", "resume", "device", "single_spec", "MODEL_TYPE", "worker",
}


_ALL_KEYS = None


def all_known_keys() -> set:
    """Every key of RecBole's yaml files (all models, datasets, quick-start settings) and of the plugin's."""
    global _ALL_KEYS
    if _ALL_KEYS is None:
        import recbole
        import yaml

        from recbole_hyper.config.renamed import RENAMED_KEYS
        from recbole_hyper.registry import MODELS, get_model_class

        keys = set(RUNTIME_KEYS) | set(RENAMED_KEYS) | set(TRAINER_PARAMS)
        for root in (Path(recbole.__file__).parent / "properties", properties_dir()):
            for path in root.rglob("*.yaml"):
                try:
                    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
                except (yaml.YAMLError, UnicodeDecodeError):
                    continue
                if isinstance(loaded, dict):
                    keys |= {str(k) for k in loaded}
        for name in MODELS:
            keys |= set(getattr(get_model_class(name), "hyper_parameters", None) or {})
        _ALL_KEYS = keys
    return _ALL_KEYS


def _check_unknown_keys(config: Config) -> None:
    """A setting that is no key of any model, dataset or RecBole, but close to one, is a typo:
    say so instead of ignoring it (keys of other models are fine: one config file may serve several)."""
    import difflib

    known = all_known_keys() | set(config.internal_config_dict)
    known |= set(getattr(config.model_class, "hyper_parameters", None) or {})
    problems = []
    for key in sorted(set(config.external_config_dict) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.85)
        if close:
            problems.append(f"  {key}: no such setting; did you mean {close[0]}?")
    if problems:
        raise HyperParameterError(
            f"Unknown settings for {config['model']}:\n" + "\n".join(problems)
            + "\nA misspelt key would be ignored: fix it in your config file, config_dict or --key=value arguments."
        )


class PluginConfig(Config):
    """``Config`` of the plugin's runner.

    Reads the plugin's defaults for every model and, after the final
    configuration is known, checks the model's hyperparameters, so invalid
    values fail before any data is loaded.
    """

    plugin_defaults_for_all_models = True

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        install_config_hook()
        _check_config_files(config_file_list)
        super().__init__(model, dataset, config_file_list, config_dict)
        check = getattr(self.model_class, "check_config", None)
        if check is not None:
            check(self)
        else:
            check_params(self, {**_recbole_model_params(self.model_class), **_baseline_params(self.model)}, self.model)
        _check_unknown_keys(self)

    def _init_device(self):
        """RecBole's device setup for one process; a rank of a distributed run joins
        its process group with gloo or NCCL (:mod:`recbole_hyper.training.distributed`)."""
        if "local_rank" not in self.final_config_dict:
            return super()._init_device()
        from recbole_hyper.training import distributed

        gpu_id = self.final_config_dict.get("gpu_id")
        if isinstance(gpu_id, (tuple, list)):
            gpu_id = ",".join(map(str, gpu_id))
        self.final_config_dict["gpu_id"] = "" if gpu_id is None else str(gpu_id)
        if self.final_config_dict["gpu_id"]:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.final_config_dict["gpu_id"]
        distributed.init_rank(self.final_config_dict)
