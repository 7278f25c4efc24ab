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

import argparse
import ast
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["TuneError", "tune", "main"]


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
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.failures[params_str] = f"{type(exc).__name__}: {message}"
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
    search.run()
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


def fixed_settings(args: List[str]) -> Dict:
    """``--key=value`` arguments as settings, values read as Python literals where they are ones."""
    settings = {}
    for arg in args:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not sep:
            raise TuneError(f"cannot read {arg!r}: settings are written --key=value.")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-hyper tune",
        description="Hyperparameter search with RecBole's HyperTuning; any other --key=value is a fixed RecBole setting.",
    )
    parser.add_argument("--model", "-m", required=True)
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--params_file", required=True, help="RecBole's params file (one line per parameter)")
    parser.add_argument("--algo", default="exhaustive", choices=["exhaustive", "random", "bayes"])
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random and bayes (exhaustive: the whole space)")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without improvement")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files applied to every trial")
    parser.add_argument("--output_file", default=None, help="result file (default: hyper/<dataset>-<model>.result)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from recbole_hyper.atomic import DataError
    from recbole_hyper.params import HyperParameterError
    from recbole_hyper.registry import UnknownModelError

    args, extra = build_parser().parse_known_args(argv)
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    try:
        fixed = fixed_settings(extra)
        # RecBole's Config would read the command line in every trial, and there it
        # outranks the trial's values: the fixed settings go in as config_dict instead.
        sys.argv = sys.argv[:1]
        result = tune(
            args.model, args.dataset, args.params_file, algo=args.algo, max_evals=args.max_evals,
            early_stop=args.early_stop, config_file_list=config_files, config_dict=fixed,
            output_file=args.output_file,
        )
    except (TuneError, UnknownModelError, DataError, HyperParameterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{result['trials']} trials, {len(result['failed'])} failed; results in {result['output_file']}")
    if result["best_params"] is None:
        print("error: every trial failed (see above)", file=sys.stderr)
        return 1
    print("best params: " + ", ".join(f"{k}={v}" for k, v in result["best_params"].items()))
    print(f"best valid score: {result['best_valid_score']:.4f}")
    print("test result: " + "  ".join(f"{k}={v:.4f}" for k, v in result["test_result"].items()))
    return 0
