"""Benchmark grid: models x datasets x training modes x seeds, resumable.

Every cell trains one model on one dataset with RecBole's pipeline under the
papers' protocol (leave-one-out by time, full ranking, early stopping on
validation NDCG@10) and writes one JSON file; cells whose file exists are
skipped, so an interrupted grid resumes where it stopped.  Each cell runs in
its own process and keeps its checkpoints in ``checkpoints/<cell>/``; a cell
that was interrupted continues from its last state (the epoch after the last
one it finished, with the same random states) instead of starting again.
A cell that its ``--max-train-minutes`` budget stopped can be carried on under
a larger budget as a new variant: ``--tag longer --continue-from ''`` starts
each ``longer`` cell from the last state of the untagged cell (a copy; the
earlier cell and its result stay as they are), which ends where a run with
the larger budget from the start would have ended.

    python -m benchmarks.grid.run_grid --datasets ml-100k \\
        --models Mamba4Rec HyMoERec HMamba HM2Rec SASRec GRU4Rec NARM BERT4Rec \\
        --modes augmented full_sequence --seeds 2020 2021 2022 \\
        --config benchmarks/configs/cpu.yaml --out benchmarks/results/runs

    python -m benchmarks.grid.report --runs benchmarks/results/runs   # table and plots

``--modes`` applies to the plugin's models and RecBole's causal SASRec and
GRU4Rec; RecBole's other baselines always train on RecBole's augmented
examples (their one mode).  Datasets other than
ml-100k are read from ``--data_path`` (a folder holding <dataset>/<dataset>.inter).
A JSON file holds the configuration, the sha256 of every atomic file the cell
trained on (``data_sha256``), the validation NDCG@10 of every epoch
with its training and evaluation time, the best-validation and test metrics,
the wall time, and the test NDCG@10 of every user (for paired significance
tests).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, add_data_path, device_name, parse_settings, spawn_worker, worker_main
from recbole_hyper.data.atomic_files import ATOMIC_SUFFIXES, DatasetNotFoundError, inter_path, locate_inter
from recbole_hyper.registry import BASELINES, MODELS
from recbole_hyper.training.baselines import CAUSAL_BASELINES

PLUGIN_MODELS = tuple(MODELS)
# Models that train in either mode; RecBole's other baselines have only the augmented one.
TWO_MODE_MODELS = PLUGIN_MODELS + CAUSAL_BASELINES


# The cut-offs every cell is evaluated at, whatever a model's yaml says (HMamba's released
# configuration reports 10/20/40): the tables give HR and NDCG at 5 and 10 for every row.
GRID_TOPK = (5, 10, 20)


def cell_name(model, dataset, mode, seed, tag=""):
    name = f"{model}-{tag}" if tag else model
    return f"{dataset}__{name}__{mode}__seed{seed}.json"


def cell_checkpoints(out: Path, cell: dict) -> Path:
    """The folder of a cell's best model and last state."""
    return out / "checkpoints" / Path(cell_name(**cell)).stem


def cells(args):
    for dataset in args.datasets:
        for model in args.models:
            modes = args.modes if model in TWO_MODE_MODELS else ["augmented"]
            for mode in modes:
                for seed in args.seeds:
                    yield dict(model=model, dataset=dataset, mode=mode, seed=seed, tag=args.tag)


class CellRecorder:
    """Trainer hooks that record what a cell's JSON holds: the run's settings,
    every epoch (validation NDCG@10, training and validation time, loss), an
    optional training-time budget, and each test user's NDCG@10."""

    def __init__(self, budget_s: float = 0.0):
        self.budget_s = budget_s
        self.history = []
        self.info = {}
        self.last_eval = None
        self.started = time.time()
        self.earlier_wall_s = 0.0  # wall time of the interrupted attempts, up to their last state
        self.resumed_after = []
        self.budget_stopped = False  # the budget, not the epochs or early stopping, ended training

    def wall_s(self) -> float:
        return self.earlier_wall_s + time.time() - self.started

    # Saved in the run's last state, so a resumed cell keeps its epochs and wall time.
    def state_dict(self) -> dict:
        return {"history": list(self.history), "wall_s": self.wall_s(), "resumed_after": list(self.resumed_after),
                "budget_stopped": self.budget_stopped}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.earlier_wall_s = float(state["wall_s"])
        last = self.history[-1]["epoch"] if self.history else None
        self.resumed_after = [*state.get("resumed_after", []), last]
        self.budget_stopped = bool(state.get("budget_stopped", False))
        print(f"    resumed after epoch {last}", flush=True)

    def on_fit_start(self, trainer, train_data):
        config, model = trainer.config, trainer.model
        self.info = {
            "train_batch_size": config["train_batch_size"],
            "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"],
            "epochs_max": config["epochs"],
            "stopping_step": config["stopping_step"],
            "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "n_train_rows": len(train_data._dataset),
            "device": device_name(config["device"]),
        }

    def on_epoch(self, trainer, record):
        from recbole_hyper.training.trainer import StopTraining

        entry = {"epoch": record["epoch"], "valid_ndcg@10": record["valid_score"]}
        entry.update({k: record[k] for k in ("train_s", "eval_s", "train_loss", "elapsed_s")})
        self.history.append(entry)
        print(
            f"    epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}  "
            f"valid NDCG@10 {record['valid_score']:.4f}  train {record['train_s']:.1f}s",
            flush=True,
        )
        self.budget_stopped = False  # a reopened run trains on
        # The budget stops only training that would go on: not the last epoch, not one early stopping ends.
        if self.budget_s and record["elapsed_s"] > self.budget_s and record["ends"] is None:
            self.budget_stopped = True
            raise StopTraining()

    def on_evaluated(self, trainer, eval_data, struct, result):
        self.last_eval = (trainer.config, eval_data, struct)  # the test evaluation comes last

    def per_user_ndcg10(self):
        """(user ids, NDCG@10 of each) of the last evaluation, by RecBole's own NDCG."""
        from recbole.evaluator.metrics import NDCG

        config, eval_data, struct = self.last_eval
        metric = NDCG(config)
        ndcg = metric.metric_info(*metric.used_info(struct))
        users = eval_data._dataset.inter_feat[config["USER_ID_FIELD"]].numpy()
        return users, ndcg[:, min(10, ndcg.shape[1]) - 1]


def grid_config(overrides: dict, data_path: str | None) -> dict:
    """The part of every cell's ``config_dict`` that comes from the grid's command line:
    the tables' cut-offs, no downloads, ``--set`` and ``--data-path`` (which wins over ``--set data_path``)."""
    # The tables are made from prepared atomic files: never download RecBole's copies (its Amazon
    # datasets are another preprocessing) unless --set allow_download=true asks for it.
    config = {"topk": list(GRID_TOPK), "allow_download": False, **overrides}
    if data_path:
        config["data_path"] = data_path
    return config


def data_files(data_path: str | None, dataset: str) -> list:
    """The atomic files RecBole reads for ``dataset``: ``<data_path>/<dataset>/<dataset>.*``, or
    RecBole's bundled copy of ml-100k when the folder has none."""
    folder = Path(data_path or "dataset") / dataset
    files = sorted(p for p in folder.glob(f"{dataset}.*") if p.suffix in ATOMIC_SUFFIXES)
    if not files and dataset == "ml-100k":
        import recbole

        folder = Path(recbole.__file__).parent / "dataset_example" / dataset
        files = sorted(p for p in folder.glob(f"{dataset}.*") if p.suffix in ATOMIC_SUFFIXES)
    return files


def data_sha256(data_path: str | None, dataset: str) -> dict:
    """{file name: sha256} of the atomic files a cell trains on, so that a result is tied to its data."""
    import hashlib

    digests = {}
    for path in data_files(data_path, dataset):
        hasher = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                hasher.update(chunk)
        digests[path.name] = hasher.hexdigest()
    return digests


def run_cell(spec: dict) -> dict:
    """Train and evaluate one cell in this process (RecBole's pipeline as the runner
    runs it, with :class:`CellRecorder` hooks); returns the result record."""
    import numpy as np
    import torch

    from recbole_hyper.quick_start import run_recbole_hyper

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    config_dict = grid_config(spec.get("overrides") or {}, spec.get("data_path"))
    config_dict.update(seed=spec["seed"], show_progress=False, checkpoint_dir=spec["checkpoint_dir"])
    model_name = spec["model"]
    if model_name in TWO_MODE_MODELS:
        config_dict["train_mode"] = spec["mode"]
    recorder = CellRecorder(float(spec.get("max_train_minutes") or 0) * 60)
    digests = data_sha256(config_dict.get("data_path"), spec["dataset"])
    last_states = sorted(Path(spec["checkpoint_dir"]).glob("*.last.pth"))
    result = run_recbole_hyper(
        model=model_name,
        dataset=spec["dataset"],
        config_file_list=spec.get("config_files") or None,
        config_dict=config_dict,
        saved=True,
        hooks=[recorder],
        count_flops=False,
        resume=last_states[-1] if last_states else None,
    )
    users, ndcg10 = recorder.per_user_ndcg10()
    history = recorder.history
    best = max(history, key=lambda h: h["valid_ndcg@10"]) if history else None
    return {
        "model": model_name,
        "tag": spec.get("tag", ""),
        "overrides": spec.get("overrides") or {},
        "dataset": spec["dataset"],
        "data_sha256": digests,
        "mode": spec["mode"],
        "seed": spec["seed"],
        **recorder.info,
        "best_valid": {k: float(v) for k, v in (result["best_valid_result"] or {}).items()},
        "test": {k: float(v) for k, v in result["test_result"].items()},
        "history": history,
        "best_epoch": best["epoch"] if best else None,
        "time_to_best_s": best["elapsed_s"] if best else None,
        "train_s_per_epoch": float(np.median([h["train_s"] for h in history])) if history else None,
        "wall_s": recorder.wall_s(),
        "resumed_after_epochs": recorder.resumed_after,
        **({"continued_from": spec["continued_from"]} if spec.get("continued_from") else {}),
        "stopped_by_budget": recorder.budget_stopped,
        "per_user_test_ndcg@10": {"user_ids": users.tolist(), "values": ndcg10.astype(float).tolist()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def continue_cell(out: Path, source: dict, checkpoints: Path) -> None:
    """Copy the finished cell ``source``'s checkpoints to ``checkpoints`` so that
    the new cell resumes from its last state; a budget-stopped run is reopened
    (its last state says training ended), one that early stopping ended only
    repeats its test.  The best model is then written to the new folder."""
    from recbole_hyper.training import resume

    record = json.loads((out / cell_name(**source)).read_text())
    reopen = bool(record.get("stopped_by_budget"))
    source_dir = cell_checkpoints(out, source)
    states = sorted(source_dir.glob("*" + resume.SUFFIX))  # main() checked there is one
    partial = checkpoints.with_name(checkpoints.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source_dir, partial)
    state = resume.read_last_state(partial / states[-1].name)
    state.pop("read_from", None)
    state["saved_model_file"] = str(checkpoints / Path(state["saved_model_file"]).name)
    if reopen:
        state["stopped"] = False
    resume.write_last_state(state, partial / states[-1].name)
    partial.rename(checkpoints)  # whole or not at all
    how = "reopened after its budget" if reopen else "ended by early stopping"
    print(f"    continuing {cell_name(**source)} (epoch {state['epoch']}, {how})", flush=True)


def fmt_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"])
    parser.add_argument("--models", nargs="+", default=list(PLUGIN_MODELS) + list(BASELINES))
    parser.add_argument("--modes", nargs="+", default=["augmented", "full_sequence"], choices=["augmented", "full_sequence"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    add_data_path(parser)
    parser.add_argument("--config", nargs="*", default=[], help="yaml files applied to every cell")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra RecBole parameters")
    parser.add_argument("--tag", default="", help="variant name for cells run with --set (part of the file name)")
    parser.add_argument("--out", default=str(RESULTS / "runs"))
    parser.add_argument("--max-train-minutes", type=float, default=0, help="stop a cell's training after this long (0: no limit)")
    parser.add_argument(
        "--continue-from", metavar="TAG", default=None,
        help="start each cell from a copy of the same cell under TAG ('' for the untagged one) and, "
        "where its budget stopped it, train on under --max-train-minutes",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="re-run cells that already have a result")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, run_cell)  # a cell counts as done once its file is complete

    overrides = parse_settings(args.set)
    out = Path(args.out).resolve()
    # Where the workers will look: their configuration, read from ``out`` (where they run);
    # RecBole's default data_path is dataset/.
    lookup = grid_config(overrides, args.data_path)
    lookup["data_path"] = str(out / lookup.get("data_path", "dataset"))
    missing_data = []
    for dataset in args.datasets:
        try:
            locate_inter(lookup, dataset)
        except DatasetNotFoundError:
            missing_data.append(dataset)
    if missing_data:
        where = f"in {args.data_path}" if args.data_path else "without --data-path"
        return fail(f"no atomic file for {', '.join(missing_data)} {where} (expected e.g. "
                    f"{inter_path(lookup['data_path'], missing_data[0])}); point --data-path at the folder that holds "
                    f"<dataset>/<dataset>.inter.")
    todo = list(cells(args))
    if args.continue_from is not None:
        if args.continue_from == args.tag:
            return fail("--continue-from names the cells' own tag; give the variant a new --tag.")
        sources = [cell_name(**dict(c, tag=args.continue_from)) for c in todo]
        missing = [name for name in sources if not (out / name).is_file()]
        if missing:
            return fail(f"--continue-from {args.continue_from!r}: {len(missing)} cell(s) to continue have no "
                        f"result in {out}, e.g. {missing[0]}; run them first.")
    done = [c for c in todo if (out / cell_name(**c)).exists()]
    pending = [c for c in todo if args.force or c not in done]
    if args.continue_from is not None:
        from recbole_hyper.training.resume import SUFFIX

        stateless = [
            cell_checkpoints(out, dict(c, tag=args.continue_from)) for c in pending
            if (args.force or not cell_checkpoints(out, c).exists())
            and not any(cell_checkpoints(out, dict(c, tag=args.continue_from)).glob("*" + SUFFIX))
        ]
        if stateless:
            return fail(f"--continue-from {args.continue_from!r}: {len(stateless)} earlier cell(s) kept no last "
                        f"state to continue from, e.g. {stateless[0]}; run the new variant without --continue-from.")
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(todo)} cells, {len(todo) - len(pending)} already done, {len(pending)} to run -> {out}")
    if args.dry_run:
        for c in pending:
            print("  ", cell_name(**c))
        return 0
    durations = []
    failures = 0
    for i, c in enumerate(pending, start=1):
        target = out / cell_name(**c)
        checkpoints = cell_checkpoints(out, c)
        if args.force and checkpoints.exists():
            shutil.rmtree(checkpoints)  # start again, not from an interrupted attempt's last state
        source = dict(c, tag=args.continue_from) if args.continue_from is not None else None
        if source is not None and not checkpoints.exists():
            continue_cell(out, source, checkpoints)
        spec = dict(
            c,
            data_path=args.data_path,
            config_files=[str(Path(p).resolve()) for p in args.config],
            overrides=overrides,
            checkpoint_dir=str(checkpoints),
            max_train_minutes=args.max_train_minutes,
            threads=args.threads,
        )
        if source is not None:
            spec["continued_from"] = cell_checkpoints(out, source).name
        eta = f", about {fmt_time(sum(durations) / len(durations) * (len(pending) - i + 1))} left" if durations else ""
        print(f"[{i}/{len(pending)}] {c['model']} {c['mode']} seed {c['seed']} on {c['dataset']}{eta}", flush=True)
        t0 = time.time()
        proc, record = spawn_worker(__spec__.name, spec, target, cwd=out)
        durations.append(time.time() - t0)
        if record is None:
            failures += 1
            print(f"    FAILED (exit {proc.returncode}); the cell stays missing", flush=True)
            continue
        print(
            f"    done in {fmt_time(record['wall_s'])}: test NDCG@10 {record['test'].get('ndcg@10', float('nan')):.4f}"
            f" HR@10 {record['test'].get('hit@10', float('nan')):.4f} (best epoch {record['best_epoch']})",
            flush=True,
        )
    print(f"finished: {len(pending) - failures} run, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
