"""Declarative checks of model hyperparameters.

Every model lists its hyperparameters as :class:`Param` objects.  The checks
run when the configuration is built by the plugin's runner (before the dataset
is loaded) and again when a model is constructed, so a typo'd value fails with
one message that names every bad key, its value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

__all__ = ["Param", "HyperParameterError", "check_params", "TRAINER_PARAMS"]


class HyperParameterError(ValueError):
    """Invalid hyperparameter values; the message lists each problem."""


_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, allowed range or choices, and meaning.

    kind: ``int``, ``float``, ``bool``, ``str`` or ``int_list``.
    low/high: inclusive bounds unless ``low_open``/``high_open``.
    choices: allowed values (strings compare case-sensitively).
    optional: ``None`` is accepted.
    """

    kind: str
    doc: str = ""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: Optional[Sequence[Any]] = None
    optional: bool = False

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = {
            "int": "an integer",
            "float": "a number",
            "bool": "True or False",
            "str": "a string",
            "int_list": "a list of integers",
        }[self.kind]
        parts = []
        if self.low is not None:
            parts.append(("> " if self.low_open else ">= ") + f"{self.low:g}")
        if self.high is not None:
            parts.append(("< " if self.high_open else "<= ") + f"{self.high:g}")
        return what + (" " + " and ".join(parts) if parts else "")

    def problem(self, value: Any) -> Optional[str]:
        """None if ``value`` is acceptable, otherwise why not."""
        if value is None:
            return None if self.optional else "must be set"
        if self.choices is not None:
            return None if value in self.choices else "must be " + self.describe()
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be True or False"
        if self.kind == "str":
            return None if isinstance(value, str) else "must be a string"
        values: Iterable[Any]
        if self.kind == "int_list":
            if not isinstance(value, (list, tuple)):
                return "must be " + self.describe()
            values = value
            number_kind = "int"
        else:
            values = [value]
            number_kind = self.kind
        for v in values:
            if isinstance(v, bool):
                return "must be " + self.describe()
            if number_kind == "int" and not isinstance(v, int):
                return "must be " + self.describe()
            if number_kind == "float" and not isinstance(v, (int, float)):
                return "must be " + self.describe()
            if self.low is not None and (v <= self.low if self.low_open else v < self.low):
                return "must be " + self.describe()
            if self.high is not None and (v >= self.high if self.high_open else v > self.high):
                return "must be " + self.describe()
        return None


def _get(config: Any, key: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, _MISSING)
    final = getattr(config, "final_config_dict", None)
    if final is not None:
        return final.get(key, _MISSING)
    try:
        return config[key]
    except (KeyError, TypeError):
        return _MISSING


def check_params(config: Any, params: Mapping[str, Param], owner: str) -> None:
    """Raise :class:`HyperParameterError` naming every invalid key of ``config``."""
    problems = []
    for key, spec in params.items():
        value = _get(config, key)
        if value is _MISSING:
            if spec.optional:
                continue
            problems.append(f"  {key}: missing ({spec.doc or spec.describe()})")
            continue
        why = spec.problem(value)
        if why is not None:
            problems.append(f"  {key} = {value!r}: {why}" + (f" ({spec.doc})" if spec.doc else ""))
    if problems:
        raise HyperParameterError(
            f"Invalid hyperparameters for {owner}:\n"
            + "\n".join(problems)
            + "\nFix them in your config file, config_dict or --key=value arguments."
        )


# Keys of RecBole's trainer and of the plugin's (see recbole_hyper.training.trainer), checked for every model.
TRAINER_PARAMS = {
    "learning_rate": Param("float", "learning rate", low=0, low_open=True, optional=True),
    "epochs": Param("int", "training epochs", low=1, optional=True),
    "train_batch_size": Param("int", "training batch size", low=1, optional=True),
    "eval_batch_size": Param("int", "evaluation batch size", low=1, optional=True),
    "weight_decay": Param("float", "L2 weight decay", low=0, optional=True),
    "stopping_step": Param("int", "validations without improvement before early stopping", low=1, optional=True),
    "lr_schedule": Param("str", "learning-rate schedule", choices=("constant", "cosine", "linear"), optional=True),
    "lr_warmup_steps": Param("int", "warm-up steps", low=0, optional=True),
    "lr_min_ratio": Param("float", "final learning rate / learning_rate", low=0.0, high=1.0, optional=True),
    "progress_interval": Param("float", "seconds between progress lines inside an epoch (0: none)", low=0, optional=True),
    "ddp_backend": Param("str", "distributed backend (--nproc > 1)", choices=("auto", "gloo", "nccl"), optional=True),
}
