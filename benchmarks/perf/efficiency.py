"""Efficiency table: training time per epoch, inference time per batch, peak memory.

Like Mamba4Rec's efficiency table (ML-1M, L = 200), on whatever machine runs
it.  Real training batches are drawn once from RecBole's data pipeline and
saved; every model then runs in its own process on the same batches:

* training: the median time of ``--steps`` steps (forward, loss, backward,
  Adam) after one warm-up step, scaled to an epoch (the augmented training
  set's number of batches);
* inference: the median time of ``full_sort_predict`` on ``--eval-batch``
  users;
* memory: the process's peak resident memory from building the model to the
  end of training, minus its resident memory before (CPU; Linux), or
  torch's peak CUDA allocation (GPU);
* for HM2Rec, the share of a training step spent in the graph part (graph
  propagation and VGAE, forward and backward), timed separately.

    python -m benchmarks.perf.efficiency --dataset ml-1m --data_path ../datasets \\
        --models Mamba4Rec HyMoERec HMamba HM2Rec SASRec BERT4Rec GRU4Rec NARM
    python -m benchmarks.perf.efficiency --dataset ml-100k --batch 256 --models Mamba4Rec HM2Rec
    python -m benchmarks.perf.efficiency --device cuda --scan-backend torch triton   # both scans, one table

``--scan-backend`` sets the plugin's models' ``scan_backend`` (default ``auto``);
with several values every plugin model runs once per backend.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    RESULTS,
    DatasetStub,
    add_data_path,
    parse_settings,
    run_metadata,
    spawn_worker,
    worker_main,
)
from benchmarks.common import sync as common_sync
from recbole_hyper.registry import BASELINES, MODELS


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Reset this process's resident-memory high-water mark (Linux >= 4.0).

    getrusage's ru_maxrss cannot serve: a child process starts with its
    parent's maximum.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def sample_batches(args, work: Path) -> dict:
    """Draw real batches (and the training graph) once; returns the dataset facts."""
    import numpy as np
    import torch
    from recbole.data import create_dataset, data_preparation

    import recbole_hyper  # noqa: F401
    from recbole_hyper.config import PluginConfig
    from recbole_hyper.data import target_field

    overrides = {
        "train_batch_size": args.batch,
        "eval_batch_size": args.eval_batch,
        "show_progress": False,
        "train_mode": args.train_mode,
    }
    if args.data_path:
        overrides["data_path"] = args.data_path
    if args.L:
        overrides["MAX_ITEM_LIST_LENGTH"] = args.L
    config = PluginConfig(model="Mamba4Rec", dataset=args.dataset, config_dict=overrides)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    batches = []
    for i, batch in enumerate(train):
        if i > args.steps:
            break
        keys = ("user_id", "item_id", "item_id_list", "item_length", target_field(config))
        batches.append({k: batch[k] for k in keys if k in batch})
    evals = []
    for i, (interaction, _, _, _) in enumerate(test):
        if i >= args.eval_steps:
            break
        evals.append({k: interaction[k] for k in ("user_id", "item_id_list", "item_length")})
    matrix = train._dataset.inter_matrix(form="coo")
    edges = np.stack([matrix.row, matrix.col], axis=1)
    torch.save({"train": batches, "eval": evals, "edges": edges}, work / "batches.pt")
    return {
        "n_users": dataset.user_num,
        "n_items": dataset.item_num,
        "train_rows": len(train._dataset),
        "batches_per_epoch": len(train),
        "L": config["MAX_ITEM_LIST_LENGTH"],
    }


def measure_model(spec: dict) -> dict:
    import torch
    from recbole.data.interaction import Interaction

    import recbole_hyper  # noqa: F401
    from recbole_hyper.compat import tune_allocator
    from recbole_hyper.config import PluginConfig
    from recbole_hyper.quick_start import training_class

    tune_allocator()
    sys.argv = sys.argv[:1]
    device = torch.device(spec["device"])
    data = torch.load(spec["batches"], weights_only=False)
    facts = spec["facts"]
    overrides = {"MAX_ITEM_LIST_LENGTH": facts["L"], "show_progress": False, "train_mode": spec["train_mode"]}
    if spec.get("scan_backend"):
        overrides["scan_backend"] = spec["scan_backend"]
    applied = {}
    if spec["model"] in MODELS:  # each model takes the settings it has
        from recbole_hyper.registry import get_model_class

        known = get_model_class(spec["model"]).hyper_parameters
        applied = {k: v for k, v in (spec.get("settings") or {}).items() if k in known}
        overrides.update(applied)
    if spec.get("data_path"):
        overrides["data_path"] = spec["data_path"]
    config = PluginConfig(model=spec["model"], dataset=spec["dataset"], config_dict=overrides)
    config["device"] = device
    cls = training_class(config)
    stub = DatasetStub({"user_id": facts["n_users"], "item_id": facts["n_items"]}, data["edges"], config)
    # The data pipeline's batch transform (BERT4Rec's masking), applied
    # before timing as RecBole's dataloader does.
    from recbole.data.transform import construct_transform

    transform = construct_transform(config)
    train = [transform(stub, Interaction(b)).to(device) for b in data["train"]]
    evals = [Interaction(b).to(device) for b in data["eval"]]

    def sync():
        common_sync(device)

    before = rss_mb()
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = cls(config, stub).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if config["train_neg_sample_args"]["distribution"] != "none":
        for b in train:  # BPR models need a negative per row
            b.update(Interaction({"neg_item_id": torch.randint(1, facts["n_items"], b["item_id"].shape, device=device)}))

    def step(batch):
        opt.zero_grad()
        # RecBole's trainer wraps the loss in autocast when enable_amp is set.
        with torch.autocast(device.type, enabled=spec["amp"]):
            out = model.calculate_loss(batch)
        (sum(out) if isinstance(out, tuple) else out).backward()
        opt.step()

    model.train()
    step(train[0])
    times = []
    for batch in train[1 : spec["steps"] + 1]:
        sync()
        t0 = time.perf_counter()
        step(batch)
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else peak_rss_mb() - before

    graph_s = None
    if getattr(model, "graph", None) is not None and hasattr(model, "graph_item_embeddings"):
        graph_times = []
        for _ in range(max(3, spec["steps"])):
            sync()
            t0 = time.perf_counter()
            table = model.fuse(model.graph_item_embeddings())
            loss = table.square().mean() + sum(model.extra_losses().values())
            loss.backward()
            sync()
            graph_times.append(time.perf_counter() - t0)
        opt.zero_grad()
        graph_s = statistics.median(graph_times)

    model.eval()
    infer = []
    with torch.no_grad():
        model.full_sort_predict(evals[0])
        for batch in evals:
            sync()
            t0 = time.perf_counter()
            model.full_sort_predict(batch)
            sync()
            infer.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {
        "model": spec["model"],
        "settings": applied,
        "train_mode": spec["train_mode"],
        "amp": spec["amp"],
        "step_s": step_s,
        "step_times_s": times,
        "epoch_s_estimate": step_s * facts["batches_per_epoch"],
        "inference_s_per_batch": statistics.median(infer),
        "peak_memory_MB": peak,
        "graph_s": graph_s,
        "graph_share": graph_s / step_s if graph_s else None,
        "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    add_data_path(parser)
    parser.add_argument("--models", nargs="+", default=list(MODELS) + list(BASELINES))
    parser.add_argument("--batch", type=int, default=2048, help="training batch size (RecBole's default)")
    parser.add_argument("--eval-batch", type=int, default=256, help="users per inference batch")
    parser.add_argument("--L", type=int, default=None, help="MAX_ITEM_LIST_LENGTH (default: the dataset's)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eval-steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-mode", default="augmented", choices=["augmented", "full_sequence"],
                        help="full_sequence: --batch counts windows")
    parser.add_argument("--amp", action="store_true", help="autocast the loss (bfloat16 on a CPU), as enable_amp does")
    parser.add_argument("--scan-backend", nargs="+", default=["auto"],
                        choices=["auto", "cuda", "triton", "torch"],
                        help="scan_backend of the plugin's models; several values: one row per backend")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings of the plugin's models, each given to the models that have it "
                             "(values read as JSON where they are JSON)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, measure_model)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"drawing {args.steps + 1} training batches of {args.batch} from {args.dataset} ...", flush=True)
        facts = sample_batches(args, work)
        print(f"  {facts}", flush=True)
        rows = []
        settings = parse_settings(args.set)
        runs = [
            (model, backend)
            for model in args.models
            for backend in (args.scan_backend if model in MODELS else [None])
        ]
        for model, backend in runs:
            label = model if backend in (None, "auto") or len(args.scan_backend) == 1 else f"{model} ({backend})"
            spec = dict(
                model=model, dataset=args.dataset, data_path=args.data_path, device=args.device,
                batches=str(work / "batches.pt"), facts=facts, steps=args.steps,
                train_mode=args.train_mode, amp=args.amp, scan_backend=backend, settings=settings,
            )
            tag = label.replace(" ", "_").replace("(", "").replace(")", "")
            proc, row = spawn_worker(__spec__.name, spec, work / f"{tag}.json", cwd=tmp, capture=True)
            if row is None:
                why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
                print(f"  {label}: FAILED, {why}\n{proc.stderr[-2000:]}", flush=True)
                rows.append({"model": label, "failed": why})
                continue
            row["model"] = label
            row["scan_backend"] = backend
            rows.append(row)
            extra = f", graph {row['graph_share'] * 100:.0f}% of a step" if row["graph_share"] else ""
            print(
                f"  {label:10s} step {row['step_s']:.3f} s  epoch ~{row['epoch_s_estimate']:.0f} s  "
                f"inference {row['inference_s_per_batch']:.3f} s/batch  peak {row['peak_memory_MB']:.0f} MB{extra}",
                flush=True,
            )

    failed = [r for r in rows if "failed" in r]
    rows = [r for r in rows if "failed" not in r]
    by = {r["model"]: r for r in rows}
    print(
        f"\n{args.dataset}, L = {facts['L']}, {args.train_mode} training batch {args.batch}"
        f"{' with autocast' if args.amp else ''}, inference batch {args.eval_batch} users, device {args.device}\n"
    )
    print(
        "| model | train step (s) | time per epoch (s, estimated) | inference per batch (s) | peak memory (MB) | params"
        " | graph share of a step | step vs Mamba4Rec |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["step_s"] / by["Mamba4Rec"]["step_s"] if "Mamba4Rec" in by else float("nan")
        share = f"{r['graph_share'] * 100:.0f}%" if r["graph_share"] else "-"
        print(
            f"| {r['model']} | {r['step_s']:.3f} | {r['epoch_s_estimate']:.0f} | {r['inference_s_per_batch']:.3f} | "
            f"{r['peak_memory_MB']:.0f} | {r['n_params']:,} | {share} | {ratio:.2f}x |"
        )
    suffix = ("_full_sequence" if args.train_mode == "full_sequence" else "") + ("_amp" if args.amp else "")
    if args.scan_backend != ["auto"]:
        suffix += "_scan-" + "-".join(args.scan_backend)
    out = Path(args.out) if args.out else (
        RESULTS / f"efficiency_{args.dataset}_{args.device}_b{args.batch}{suffix}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    meta = run_metadata(args)
    for r in failed:
        print(f"| {r['model']} | {r['failed']} | | | | | | |")
    out.write_text(json.dumps({"meta": meta, "dataset": facts, "rows": rows, "failed": failed}, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
