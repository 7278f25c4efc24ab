"""The ``recbole-hyper`` command: ``train`` (the default), ``tune``, ``recommend``, ``plot``.

    recbole-hyper --model=HM2Rec --dataset=ml-1m --data_path=/data     # train (as run_recbole_hyper.py)
    recbole-hyper train --model=HM2Rec --dataset=ml-1m
    recbole-hyper tune --model=HyMoERec --params_file=space.hyper --algo=bayes
    recbole-hyper recommend saved/HM2Rec-....pth --users 196 186 --k 10
    recbole-hyper plot saved/HMamba-....pth --out items.png

Every subcommand reports a bad input in one line on stderr and exits with
status 2.  The work itself lives in the package (:mod:`recbole_hyper.quick_start`,
:mod:`recbole_hyper.training.tune`, :mod:`recbole_hyper.serving`); this module
only reads arguments and prints results.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Dict, List, Optional

from recbole_hyper.errors import describe_error

__all__ = ["main", "train_main", "tune_main", "recommend_main", "plot_main", "fixed_settings"]

SUBCOMMANDS = ("train", "tune", "recommend", "plot")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``recbole-hyper`` and ``run_recbole_hyper.py``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
        return _fail(f"unknown subcommand '{argv[0]}': use one of {', '.join(SUBCOMMANDS)} (train when left out).")
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "train"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    return {"train": train_main, "tune": tune_main, "recommend": recommend_main, "plot": plot_main}[command](rest)


def _fail(exc: BaseException) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- train
def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-hyper train",
        description=(
            "Train and evaluate a recbole-hyper model (or any RecBole model) with "
            "RecBole's pipeline. Any other --key=value sets that RecBole parameter, "
            "e.g. --epochs=50 --train_batch_size=512 --data_path=/data."
        ),
    )
    parser.add_argument("--model", "-m", default=None, help="model name (default: Mamba4Rec)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default: ml-100k, bundled with RecBole)")
    parser.add_argument(
        "--resume", default=None, metavar="PATH",
        help="continue an interrupted run from its last state (<checkpoint>.last.pth); "
        "model, dataset and settings come from it, --key=value changes settings on top",
    )
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument(
        "--nproc", type=int, default=1, help="processes of a distributed run on this node (gloo on CPUs, NCCL on GPUs)"
    )
    parser.add_argument("--ip", default="localhost", help="master address for distributed training")
    parser.add_argument("--port", default="5678", help="master port for distributed training")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes over all nodes")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this node")
    return parser


def train_main(argv: Optional[List[str]] = None) -> int:
    """``recbole-hyper train``: one run, or ``--nproc`` processes of a distributed one."""
    args, _ = train_parser().parse_known_args(argv)
    if argv is not None:
        # RecBole's Config reads --key=value settings from sys.argv: let it see these arguments.
        saved_argv = sys.argv
        sys.argv = [sys.argv[0], *argv]
        try:
            return _train(args)
        finally:
            sys.argv = saved_argv
    return _train(args)


def _train(args) -> int:
    from recbole_hyper.config.params import HyperParameterError
    from recbole_hyper.data.atomic_files import DataError
    from recbole_hyper.quick_start import run
    from recbole_hyper.registry import UnknownModelError
    from recbole_hyper.training.resume import ResumeError

    for flag, example in (("model", "Mamba4Rec"), ("dataset", "ml-100k")):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            return _fail(f"--{flag} is empty: name one (e.g. --{flag}={example}), or leave the flag out for {example}.")
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    if args.resume is None:
        args.model = args.model or "Mamba4Rec"
        args.dataset = args.dataset or "ml-100k"
    try:
        result = run(
            args.model,
            args.dataset,
            config_file_list=config_files,
            resume=args.resume,
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
        )
    except (UnknownModelError, DataError, HyperParameterError, ResumeError) as exc:
        return _fail(exc)
    if result is not None:
        print(summary(result))
    return 0


def summary(result: Dict) -> str:
    """The lines ``train`` prints: valid and test metrics, the checkpoint."""
    lines = [f"{result['model']} on {result['dataset']}"]
    for split in ("best_valid_result", "test_result"):
        values = result.get(split) or {}
        name = "valid" if split.startswith("best") else "test"
        lines.append(f"  {name:5s} " + "  ".join(f"{k}={v:.4f}" for k, v in values.items()))
    if result.get("checkpoint"):
        lines.append(f"  checkpoint: {result['checkpoint']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------- tune
def fixed_settings(args: List[str]) -> Dict:
    """``--key=value`` arguments as settings, values read as Python literals where they are ones."""
    from recbole_hyper.training.tune import TuneError

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


def tune_parser() -> argparse.ArgumentParser:
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


def tune_main(argv: Optional[List[str]] = None) -> int:
    """``recbole-hyper tune``: RecBole's HyperTuning, every trial through the plugin's runner."""
    from recbole_hyper.config.params import HyperParameterError
    from recbole_hyper.data.atomic_files import DataError
    from recbole_hyper.registry import UnknownModelError
    from recbole_hyper.training.tune import TuneError, tune

    args, extra = tune_parser().parse_known_args(argv)
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
        return _fail(exc)
    print(f"{result['trials']} trials, {len(result['failed'])} failed; results in {result['output_file']}")
    if result["best_params"] is None:
        print("error: every trial failed (see above)", file=sys.stderr)
        return 1
    print("best params: " + ", ".join(f"{k}={v}" for k, v in result["best_params"].items()))
    print(f"best valid score: {result['best_valid_score']:.4f}")
    print("test result: " + "  ".join(f"{k}={v:.4f}" for k, v in result["test_result"].items()))
    return 0


# ------------------------------------------------------------------ recommend
def _checkpoint_parser(command: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that reads a trained model's checkpoint."""
    parser = argparse.ArgumentParser(prog=f"recbole-hyper {command}", description=description)
    parser.add_argument("checkpoint", help="a .pth file written by training")
    return parser


def recommend_parser() -> argparse.ArgumentParser:
    parser = _checkpoint_parser("recommend", "Top-k items from a trained model's checkpoint, printed to stdout.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--users", nargs="+", help="user tokens (as in the dataset's .inter file)")
    source.add_argument(
        "--sequences-file",
        help="one history per line: item tokens separated by white space (or --separator); "
        "the output's sequence column is the line number (1-based)",
    )
    parser.add_argument(
        "--separator", default=None, help="token separator of --sequences-file, e.g. '\\t' (default: white space)"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--format", choices=["csv", "json"], default="csv")
    parser.add_argument("--keep-seen", action="store_true", help="do not drop items of the history")
    parser.add_argument("--ignore-unknown", action="store_true", help="skip unknown tokens instead of failing")
    parser.add_argument("--device", default="cpu")
    return parser


def recommend_main(argv: Optional[List[str]] = None) -> int:
    """``recbole-hyper recommend CHECKPOINT --users U [U ...] | --sequences-file F [--k K] [--format csv|json]``."""
    from recbole_hyper.registry import UnknownModelError
    from recbole_hyper.serving.recommender import Recommender, UnknownTokenError

    parser = recommend_parser()
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    errors = "ignore" if args.ignore_unknown else "raise"
    try:
        rec = Recommender.from_checkpoint(args.checkpoint, device=args.device)
        if args.users:
            frame = rec.recommend(args.users, k=args.k, exclude_seen=not args.keep_seen, errors=errors)
        else:
            numbers, sequences = read_sequences(args.sequences_file, args.separator)
            frame = rec.recommend_sequences(sequences, k=args.k, exclude_seen=not args.keep_seen, errors=errors)
            frame["sequence"] = [numbers[i] for i in frame["sequence"]]
    except (UnknownTokenError, UnknownModelError, OSError, ValueError, TypeError) as exc:
        return _fail(exc)
    if args.format == "json":
        print(frame.to_json(orient="records"))
    else:
        print(frame.to_csv(index=False), end="")
    return 0


def read_sequences(path, separator=None):
    """(line numbers, histories) of a sequences file: one history per non-blank line, tokens split on
    white space or on ``separator`` (``\\t`` for a tab); blank lines are skipped but keep the numbering."""
    separator = None if separator is None else separator.encode("utf-8").decode("unicode_escape")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"--sequences-file {path} is not UTF-8 text ({exc}).") from None
    numbers, sequences = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        tokens = line.split(separator) if separator else line.split()
        numbers.append(number)
        sequences.append([t.strip() for t in tokens if t.strip()])
    if not sequences:
        raise ValueError(f"--sequences-file {path} holds no history: write one history of item tokens per line.")
    return numbers, sequences


# ----------------------------------------------------------------------- plot
def plot_parser() -> argparse.ArgumentParser:
    parser = _checkpoint_parser("plot", "Plot a trained HMamba checkpoint's item embeddings on the Poincare disk (PNG).")
    parser.add_argument("--out", default=None, help="PNG path (default: next to the checkpoint)")
    return parser


def plot_main(argv: Optional[List[str]] = None) -> int:
    """``recbole-hyper plot CHECKPOINT [--out PNG]`` (needs matplotlib: ``pip install recbole-hyper[plot]``)."""
    from recbole_hyper.quick_start import load_data_and_model
    from recbole_hyper.serving.plot import item_popularity, plot_poincare

    args = plot_parser().parse_args(argv)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        return _fail(f"checkpoint {checkpoint} not found")
    try:
        config, model, dataset, train_data, _, _ = load_data_and_model(str(checkpoint))
    except Exception as exc:  # not a checkpoint, or its data are gone
        return _fail(f"{checkpoint} cannot be loaded with its data ({describe_error(exc)})")
    popularity = item_popularity(train_data._dataset, model.n_items)
    out = Path(args.out) if args.out else checkpoint.with_suffix(".poincare.png")
    title = f"{config['model']} on {config['dataset']}: items on the Poincare disk"
    try:
        plot_poincare(model, popularity, out, title)
    except TypeError as exc:
        return _fail(exc)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
