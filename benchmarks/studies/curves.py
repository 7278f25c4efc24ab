"""Learning curves of several runs side by side: validation NDCG@10 by epoch and by time.

Each run is a JSON file written by ``run_grid.py``; its label is the name of
the folder the grid wrote it to, or ``label=path``.

    python -m benchmarks.studies.curves benchmarks/results/ml-1m-old-copy/recipe/*/*.json \\
        --out benchmarks/results/ml-1m-old-copy/recipe/curves.png --paper 0.1822

Prints a table (best validation, its epoch, test metrics, seconds per epoch,
wall time, time to 98% of ``--paper``) and writes it beside the plot as
``.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(spec: str):
    label, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    record = json.loads(Path(path).read_text())
    return label or Path(path).parent.name, record


def table(runs, paper=None):
    header = "| run | batch | best valid NDCG@10 (epoch) | test NDCG@10 | test HR@10 | s/epoch (train) | epochs | wall |"
    lines = [header, "|---" * 8 + "|"]
    if paper:
        lines[0] += f" test / paper {paper} |"
        lines[1] += "---|"
    for label, r in runs:
        best = max(r["history"], key=lambda h: h["valid_ndcg@10"])
        row = (
            f"| {label} | {r['train_batch_size']} | {best['valid_ndcg@10']:.4f} ({best['epoch']}) "
            f"| {r['test']['ndcg@10']:.4f} | {r['test']['hit@10']:.4f} | {r['train_s_per_epoch']:.1f} "
            f"| {r['history'][-1]['epoch'] + 1} | {r['wall_s'] / 60:.1f} min |"
        )
        if paper:
            row += f" {r['test']['ndcg@10'] / paper:.1%} |"
        lines.append(row)
    return "\n".join(lines)


def eval_step_table(runs, steps=(1, 2, 3, 5)):
    """What evaluating every k epochs would have chosen, read off per-epoch curves.

    RecBole validates when (epoch + 1) % eval_step == 0 and counts patience in
    evaluations; the chosen model is the best of the evaluated epochs.
    """
    lines = ["| run | eval_step | chosen epoch | its valid NDCG@10 | vs every epoch | validation time saved |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, r in runs:
        history = r["history"]
        if [h["epoch"] for h in history] != list(range(len(history))):
            continue  # validated less often than every epoch already
        full = max(h["valid_ndcg@10"] for h in history)
        eval_s = sum(h["eval_s"] for h in history)
        for k in steps:
            seen = [h for h in history if (h["epoch"] + 1) % k == 0]
            if not seen:
                continue
            best = max(seen, key=lambda h: h["valid_ndcg@10"])
            lines.append(
                f"| {label} | {k} | {best['epoch']} | {best['valid_ndcg@10']:.4f} | "
                f"{best['valid_ndcg@10'] / full - 1:+.1%} | {eval_s * (1 - 1 / k) / 60:.1f} min |"
            )
    return "\n".join(lines)


def plot(runs, out: Path, paper=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, r in runs:
        epochs = [h["epoch"] for h in r["history"]]
        minutes = [h["elapsed_s"] / 60 for h in r["history"]]
        values = [h["valid_ndcg@10"] for h in r["history"]]
        axes[0].plot(epochs, values, marker=".", label=label)
        axes[1].plot(minutes, values, marker=".", label=label)
    for ax, xlabel in zip(axes, ("epoch", "minutes (training + validation)")):
        if paper:
            ax.axhline(paper, color="grey", linestyle="--", linewidth=1)
            ax.axhline(0.98 * paper, color="grey", linestyle=":", linewidth=1)
            ax.set_ylim(top=max(ax.get_ylim()[1], paper * 1.03))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation NDCG@10")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if paper:
        axes[0].set_title(f"dashed: paper's test NDCG@10 {paper}; dotted: 98% of it", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run JSON files, optionally label=path")
    parser.add_argument("--out", required=True, help="PNG file; the table goes beside it as .md")
    parser.add_argument("--paper", type=float, default=None, help="paper's test NDCG@10 (dashed line; 98%% dotted)")
    parser.add_argument("--title", default="")
    parser.add_argument("--eval-steps", action="store_true", help="also tabulate what a larger eval_step would choose")
    args = parser.parse_args()
    runs = [load(s) for s in args.runs]
    out = Path(args.out)
    plot(runs, out, args.paper)
    text = table(runs, args.paper)
    if args.eval_steps:
        text += "\n\n" + eval_step_table(runs)
    out.with_suffix(".md").write_text((f"{args.title}\n\n" if args.title else "") + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
