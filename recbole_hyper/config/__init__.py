"""Configuration the RecBole way: the plugin's yaml defaults, checks and renamed keys.

* :mod:`~recbole_hyper.config.plugin_config`: :class:`PluginConfig` and the hook
  that gives RecBole's own ``Config`` the plugin's yaml defaults;
* :mod:`~recbole_hyper.config.params`: declarative hyperparameter checks
  (:class:`Param`);
* :mod:`~recbole_hyper.config.renamed`: settings that were renamed, still
  accepted under their old names with a deprecation warning.
"""

from recbole_hyper.config.params import TRAINER_PARAMS, HyperParameterError, Param, check_params
from recbole_hyper.config.plugin_config import (
    DataError,
    DatasetNotFoundError,
    PluginConfig,
    install_config_hook,
    plugin_yaml_files,
    properties_dir,
)
from recbole_hyper.config.renamed import RENAMED_KEYS, RENAMED_VALUES, upgrade_settings

__all__ = [
    "PluginConfig",
    "install_config_hook",
    "plugin_yaml_files",
    "properties_dir",
    "DataError",
    "DatasetNotFoundError",
    "Param",
    "HyperParameterError",
    "check_params",
    "TRAINER_PARAMS",
    "RENAMED_KEYS",
    "RENAMED_VALUES",
    "upgrade_settings",
]
