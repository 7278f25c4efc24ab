"""Settings that were renamed, and how an old name keeps working.

The sampled softmax (a loss over a sample of the catalog) was called ``SSM``,
which is also the name of Mamba's state space model; its loss type and keys
now say what they are.  A configuration (yaml file, ``config_dict``, command
line, or the settings stored in an old checkpoint or last state) that uses an
old name still works: the value moves to the new name, with one
``FutureWarning`` per old name.
"""

from __future__ import annotations

import warnings
from typing import Dict, MutableMapping

__all__ = ["RENAMED_KEYS", "RENAMED_VALUES", "upgrade_settings"]

#: old key -> new key
RENAMED_KEYS: Dict[str, str] = {
    "ssm_negatives": "sampled_softmax_negatives",
    "ssm_sampler": "sampled_softmax_sampler",
    "ssm_logq": "sampled_softmax_logq",
}

#: key -> {old value -> new value}
RENAMED_VALUES: Dict[str, Dict[str, str]] = {
    "loss_type": {"SSM": "SampledSoftmax"},
}


def upgrade_settings(settings: MutableMapping, warn: bool = True) -> MutableMapping:
    """Move old keys and values of ``settings`` (a dict, changed in place) to their new names.

    A new key that is set explicitly wins over its old name.  Returns ``settings``.
    """
    if not settings:
        return settings
    for old, new in RENAMED_KEYS.items():
        if old in settings:
            value = settings.pop(old)
            if warn:
                warnings.warn(
                    f"The setting '{old}' is now '{new}'; '{old}' still works but will be removed.",
                    FutureWarning,
                    stacklevel=3,
                )
            settings.setdefault(new, value)
    for key, values in RENAMED_VALUES.items():
        value = settings.get(key)
        if isinstance(value, str) and value in values:
            settings[key] = values[value]
            if warn:
                warnings.warn(
                    f"{key}: '{value}' is now '{values[value]}'; '{value}' still works but will be removed.",
                    FutureWarning,
                    stacklevel=3,
                )
    return settings
