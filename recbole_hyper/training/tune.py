"""Hyperparameter search with RecBole's ``HyperTuning``, for every model of the plugin.

``recbole-hyper tune --model=HyMoERec --dataset=ml-100k --params_file=space.hyper``

RecBole's ``run_hyper`` builds a stock ``Config`` in each trial, which cannot
find plugin models in a fresh process unless they are registered (RecBole
issues #1600, #1898).  Here every trial is :func:`run_recbole_hyper`: the
plugin's yaml defaults, its early checks of names, values and data, and its
trainer.  The search itself is RecBole's ``HyperTuning`` (hyperopt): the same
params-file format (``name choice [..]``, ``uniform low,high``, ``quniform
low,high,q``, ``loguniform low,high``), the same algorithms (``exhaustive``,
``random``, ``bayes``), the same result file.  A trial that fails (a bad value
in the space) is reported in one line, recorded as failed in the result file,
and the search goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

from recbole_hyper.errors import describe_error

__all__ = ["TuneError", "tune"]


class TuneError(ValueError):
    """The search cannot start; the message says why and what to do."""


def _hyper_tuning_class():
    try:
        import hyperopt
    except ImportError:
        raise TuneError("the search needs hyperopt: pip install hyperopt==0.2.5") from None
    from recbole.trainer import HyperTuning

    class PluginHyperTuning(HyperTuning):
        """RecBole's HyperTuning; a failing trial is reported and the search continues."""

        failures: Dict[str, str]

        def trial(self, params):
            self.failures = getattr(self, "failures", {})
            try:
                return super().trial(params)
            except Exception as exc:  # noqa: BLE001 - any trial may fail; the search goes on
                params_str = self.params2str(params)
                self.failures[params_str] = describe_error(exc, limit=None)
                print(f"trial failed ({params_str}): {self.failures[params_str]}", flush=True)
                # hyperopt skips failed trials; its early-stop rule still reads a loss.
                return {"status": hyperopt.STATUS_FAIL, "loss": float("inf")}

        def export_result(self, output_file=None):
            super().export_result(output_file)
            if self.failures:
                with open(output_file, "a") as fp:
                    for params_str, error in self.failures.items():
                        fp.write(f"{params_str}\nFailed: {error}\n\n")

    return PluginHyperTuning


PARAM_TYPES = {"choice": 1, "uniform": 2, "quniform": 3, "loguniform": 2}


def check_params_file(path: Path) -> None:
    """Every non-blank line of RecBole's params file is ``name type value`` with a known type
    (RecBole would skip a line with fewer parts without a word)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TuneError(f"cannot read the params file {path}: {exc}.") from None
    form = "lines are 'name choice [..]', 'name uniform low,high', 'name quniform low,high,q' or 'name loguniform low,high'"
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(" ")
        if len(parts) < 3 or parts[1] not in PARAM_TYPES:
            raise TuneError(f"{path}, line {number}: {line.strip()!r} is not 'name type value' ({form}).")
        if parts[1] != "choice" and len("".join(parts[2:]).split(",")) != PARAM_TYPES[parts[1]]:
            raise TuneError(f"{path}, line {number}: {parts[1]} takes {PARAM_TYPES[parts[1]]} numbers ({form}).")


def _objective(model: str, dataset: str, base: Dict):
    def objective(config_dict, config_file_list=None):
        from recbole_hyper.quick_start import run_recbole_hyper

        root = logging.getLogger()
        for handler in root.handlers[:]:  # each trial's logger replaces the last one's
            root.removeHandler(handler)
        settings = dict(base)
        settings.update(config_dict or {})
        return run_recbole_hyper(model, dataset, config_file_list, settings, saved=True, count_flops=False)

    return objective


def tune(
    model: str,
    dataset: str,
    params_file,
    algo: str = "exhaustive",
    max_evals: int = 100,
    early_stop: int = 10,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict] = None,
    output_file=None,
) -> Dict:
    """Search ``params_file``'s space for ``model`` on ``dataset``; returns the best trial.

    Returns ``{"best_params", "best_valid_score", "best_valid_result",
    "test_result", "trials", "failed", "output_file"}``.
    """
    from recbole_hyper.registry import get_model_class

    get_model_class(model)  # an unknown name fails here, not in every trial
    params_file = Path(params_file)
    if not params_file.is_file():
        raise TuneError(
            f"no params file {params_file}: write one line per parameter, e.g. 'learning_rate choice [0.001,0.0005]'."
        )
    if algo not in ("exhaustive", "random", "bayes"):
        raise TuneError(f"--algo={algo}: use exhaustive, random or bayes.")
    for name, value in (("max_evals", max_evals), ("early_stop", early_stop)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TuneError(f"--{name}={value}: must be an integer >= 1.")
    check_params_file(params_file)
    tuning_class = _hyper_tuning_class()
    base = {"show_progress": False}
    base.update(config_dict or {})  # fixed settings; each trial's values override them
    try:
        search = tuning_class(
            _objective(model, dataset, base),
            params_file=str(params_file),
            fixed_config_file_list=config_file_list,
            algo=algo,
            max_evals=max_evals,
            early_stop=early_stop,
        )
    except (ValueError, SyntaxError, NameError) as exc:
        raise TuneError(f"{params_file}: {exc} (lines are 'name choice [..]', 'uniform low,high', "
                        "'quniform low,high,q' or 'loguniform low,high').") from None
    if not search.space:
        raise TuneError(f"{params_file} defines no parameter.")
    import hyperopt.exceptions

    try:
        search.run()
    except hyperopt.exceptions.AllTrialsFailed:
        pass  # every trial failed: the result file lists why, and no best trial is returned
    output_file = Path(output_file or Path("hyper") / f"{dataset}-{model}.result")
    output_file.parent.mkdir(parents=True, exist_ok=True)
    search.export_result(output_file=str(output_file))
    failures = getattr(search, "failures", {})
    best = None
    if search.best_params is not None:
        best = search.params2result[search.params2str(search.best_params)]
    return {
        "best_params": search.best_params,
        "best_valid_score": None if best is None else best["best_valid_score"],
        "best_valid_result": None if best is None else best["best_valid_result"],
        "test_result": None if best is None else best["test_result"],
        "trials": len(search.params2result) + len(failures),
        "failed": dict(failures),
        "output_file": str(output_file),
    }
