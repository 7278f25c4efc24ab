"""HM2Rec's ablation table: the full model and one component removed at a time.

    python -m benchmarks.studies.ablations run --datasets ml-100k amazon-beauty \\
        --data-path /path/to/datasets --seeds 2020 2021 2022
    python -m benchmarks.studies.ablations report

``run`` trains every (dataset, variant, seed) cell through ``run_grid.py``
(one process per cell; finished cells are skipped, so an interrupted run
resumes), full_sequence mode, with ``benchmarks/configs/cpu.yaml`` and
``benchmarks/configs/ablations.yaml``.  ``report`` writes
``benchmarks/results/ablations/table.md`` and ``summary.json``: test HR and
NDCG @5/@10 as mean +- std over the seeds, the Wilcoxon signed-rank test of
each ablation's per-user test NDCG@10 (mean over seeds) against the full
model's, and the median time per epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from report import epoch_time, load_runs, mean_std, per_user, wilcoxon

from benchmarks.common import CONFIGS as CONFIG_DIR
from benchmarks.common import RESULTS, add_data_path, module_command

OUT = RESULTS / "ablations"
CONFIGS = [CONFIG_DIR / "cpu.yaml", CONFIG_DIR / "ablations.yaml"]

# variant tag -> (label, overrides); "full" is HM2Rec's defaults.
VARIANTS = {
    "full": ("HM2Rec (full)", []),
    "no_hyperbolic": ("w/o hyperbolic", ["use_hyperbolic=false"]),
    "no_vgae": ("w/o VGAE", ["use_vgae=false"]),
    "no_rope": ("w/o RoPE", ["rope_mode=none"]),
    "no_moe": ("w/o MoE", ["use_moe=false"]),
}
METRICS = ["hit@5", "hit@10", "ndcg@5", "ndcg@10"]
# Per-dataset settings on top of the configs (see configs/ablations.yaml).  HM2Rec
# propagates the whole user-item graph at every training step, so its epoch time is
# set by the number of steps: on amazon-beauty (34k nodes) the default 2048 // 50 = 40
# windows per batch make about 560 steps and several minutes per epoch on 2 cores.
# There: 256 windows per batch at twice the learning rate, 4 epochs (about 45 s each).
DATASET_SETTINGS = {
    "amazon-beauty": ['full_sequence_defaults={"train_batch_size": 256, "learning_rate": 0.002}', "epochs=4"],
}


def run(args) -> int:
    failed = 0
    # Seed by seed, so that an interrupted run has every variant of the first seeds.
    for dataset in args.datasets:
        for seed in args.seeds:
            for tag in args.variants:
                python, env = module_command("benchmarks.grid.run_grid")
                cmd = [
                    *python,
                    "--datasets", dataset, "--models", "HM2Rec", "--modes", "full_sequence",
                    "--seeds", str(seed), "--tag", tag, "--out", str(args.out / "runs"),
                    "--config", *map(str, CONFIGS),
                ]
                if args.data_path:
                    cmd += ["--data-path", args.data_path]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if args.max_train_minutes:
                    cmd += ["--max-train-minutes", str(args.max_train_minutes)]
                overrides = DATASET_SETTINGS.get(dataset, []) + VARIANTS[tag][1]
                if overrides:
                    cmd += ["--set", *overrides]
                print(f"== {dataset}: {VARIANTS[tag][0]}, seed {seed}", flush=True)
                failed += subprocess.run(cmd, env=env).returncode != 0
    return 1 if failed else 0


def summarise(runs):
    by = {}
    for r in runs:
        if r.get("model") == "HM2Rec" and r.get("tag") in VARIANTS:
            by.setdefault((r["dataset"], r["tag"]), []).append(r)
    summary = []
    for (dataset, tag), rs in sorted(by.items(), key=lambda kv: (kv[0][0], list(VARIANTS).index(kv[0][1]))):
        row = {
            "dataset": dataset,
            "variant": tag,
            "label": VARIANTS[tag][0],
            "seeds": sorted(r["seed"] for r in rs),
            "s_per_epoch": mean_std([epoch_time(r) for r in rs])[0],
            "epochs": mean_std([len(r["history"]) for r in rs])[0],
            "best_epochs": sorted(r["best_epoch"] for r in rs),
            "epochs_max": max(r["epochs_max"] for r in rs),
            "stopping_step": max(r["stopping_step"] for r in rs),
            "threads": sorted({r["threads"] for r in rs}),
            "train_batch_size": sorted({r["train_batch_size"] for r in rs}),
        }
        for m in METRICS:
            row[m] = mean_std([r["test"].get(m) for r in rs])
        full = by.get((dataset, "full"))
        if tag != "full" and full:
            p, diff = wilcoxon(per_user(rs), per_user(full))
            row["wilcoxon_p"], row["ndcg@10_diff_vs_full"] = p, diff
        summary.append(row)
    return summary


def markdown(summary) -> str:
    lines = [
        "# HM2Rec ablations (full_sequence, test split, mean ± std over seeds)",
        "",
        "Wilcoxon: signed-rank test of the per-user test NDCG@10 (mean over seeds) against the full model;"
        " Δ = ablation − full.",
        "",
    ]
    for dataset in sorted({row["dataset"] for row in summary}):
        lines += [
            f"## {dataset}",
            "",
            "| variant | seeds | HR@5 | HR@10 | NDCG@5 | NDCG@10 | Δ NDCG@10 | Wilcoxon p | s/epoch | epochs (best) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = [r for r in summary if r["dataset"] == dataset]
        budget = (
            f"Budget: at most {rows[0]['epochs_max']} epochs, patience {rows[0]['stopping_step']}; "
            f"full_sequence batch {', '.join(map(str, sorted({b for r in rows for b in r['train_batch_size']})))} windows; "
            f"torch threads {', '.join(map(str, sorted({t for r in rows for t in r['threads']})))}. "
            "s/epoch is the median of training + validation time per epoch on a shared 2-core CPU."
        )
        lines.insert(len(lines) - 2, budget)
        lines.insert(len(lines) - 2, "")
        for row in (r for r in summary if r["dataset"] == dataset):
            cells = [f"{row[m][0]:.4f} ± {row[m][1]:.4f}" for m in METRICS]
            delta = f"{row['ndcg@10_diff_vs_full']:+.4f}" if "wilcoxon_p" in row else "—"
            p = f"{row['wilcoxon_p']:.3g}" if "wilcoxon_p" in row else "—"
            lines.append(
                f"| {row['label']} | {len(row['seeds'])} | " + " | ".join(cells)
                + f" | {delta} | {p} | {row['s_per_epoch']:.1f}"
                + f" | {row['epochs']:.1f} ({', '.join(map(str, row['best_epochs']))}) |"
            )
        lines.append("")
    return "\n".join(lines)


def report(args) -> int:
    summary = summarise(load_runs(args.out / "runs"))
    if not summary:
        print(f"no ablation runs under {args.out / 'runs'}", file=sys.stderr)
        return 2
    text = markdown(summary)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the cells (resumable)")
    r.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon-beauty"])
    r.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    r.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    add_data_path(r)
    r.add_argument("--threads", type=int, default=0, help="torch threads per cell (0: torch's default)")
    r.add_argument("--max-train-minutes", type=float, default=0, help="per-cell training time limit (0: none)")
    for p in (r, sub.add_parser("report", help="write table.md and summary.json")):
        p.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
