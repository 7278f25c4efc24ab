"""Tables and plots from one or more folders of benchmark runs (``run_grid.py`` JSON files).

    python -m benchmarks.grid.report --runs benchmarks/results/ml-100k/runs --out benchmarks/results/ml-100k
    python -m benchmarks.grid.report --runs benchmarks/results/amazon-beauty/runs benchmarks/results/amazon-beauty/variants \\
        --out benchmarks/results/amazon-beauty

Writes ``table.md`` (mean +- std over seeds per cell, the papers' numbers and
our relative difference, a paired Wilcoxon test of each of our models against
its baseline on per-user test NDCG@10, training time), ``summary.json``,
``valid_ndcg_per_epoch.png`` and ``ndcg_bars.png``.

Baselines for the significance test: Mamba4Rec against RecBole's SASRec in the
same training mode (its augmented run when there is none); HyMoERec, HMamba and
HM2Rec against Mamba4Rec in the same training mode. A run made with a grid
``--tag`` (a variant such as ``--set num_layers=2 --tag 2layers``) is its own row,
"Mamba4Rec [2layers]"; its baseline is the baseline model's run with the same tag
when there is one (else the untagged run), and it is also tested against the same
model without the tag. ``--runs`` takes several folders, so variants kept apart
from the main grid appear in one table with it.
Per-user NDCG@10 is averaged over the seeds a cell has before pairing users.
Epoch times are medians over a run's epochs (training plus the epoch's share of
validation, which runs every eval_step epochs); "time to best" is
(best epoch + 1) x the median epoch time, which is robust to pauses of the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from recbole_hyper.registry import BASELINES, MODELS

METRICS = ["hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr@10"]
_FIRST = next(iter(MODELS))
# The first plugin model against RecBole's SASRec, every other against the first; the
# same training mode, or the baseline's augmented run when it has no run in that mode.
BASELINE = {m: BASELINES[0] if m == _FIRST else _FIRST for m in MODELS}
ORDER = list(MODELS) + list(BASELINES)


def load_runs(folder: Path):
    runs = []
    for path in sorted(folder.glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(run, dict) and "history" in run:  # not a summary.json written into the folder
            runs.append(run)
    return runs


def epoch_time(run):
    """Median time of one epoch: its training plus its share of validation (with
    eval_step > 1 only every eval_step-th epoch is validated and recorded)."""
    times, previous = [], -1
    for h in run["history"]:
        gap = max(1, h["epoch"] - previous)
        times.append(h["train_s"] + h["eval_s"] / gap)
        previous = h["epoch"]
    return statistics.median(times) if times else float("nan")


def time_to_best(run):
    return (run["best_epoch"] + 1) * epoch_time(run) if run["best_epoch"] is not None else float("nan")


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def per_user(runs):
    """user id -> mean test NDCG@10 over the runs."""
    acc = defaultdict(list)
    for r in runs:
        pu = r["per_user_test_ndcg@10"]
        for u, v in zip(pu["user_ids"], pu["values"]):
            acc[u].append(v)
    return {u: float(np.mean(v)) for u, v in acc.items()}


def wilcoxon(ours, base):
    from scipy.stats import wilcoxon as test

    users = sorted(set(ours) & set(base))
    a = np.array([ours[u] for u in users])
    b = np.array([base[u] for u in users])
    if np.allclose(a, b):
        return 1.0, 0.0
    return float(test(a, b).pvalue), float(np.mean(a - b))


def paper_for(papers, dataset, model):
    rows = papers.get(dataset, {}) or {}
    out = []
    for key, row in rows.items():
        if row.get("model", key) == model:
            out.append((key, row))
    return out


def data_id(run) -> str:
    """A short form of the data a run trained on: the first 8 hex digits of the sha256 of its
    ``.inter`` file ("not recorded" for runs made before the grid recorded it)."""
    digests = run.get("data_sha256") or {}
    inter = [v for k, v in sorted(digests.items()) if k.endswith(".inter")]
    return inter[0][:8] if inter else "not recorded"


def device(run):
    """What trained a run: the GPU's name, or 'cpu' (runs from before the grid recorded
    the device are told apart by their torch build, e.g. '2.13.0+cpu')."""
    name = run.get("device")
    if name is None:
        return "cpu" if run.get("torch", "").endswith("+cpu") else "not recorded"
    return name.split(": ", 1)[-1]  # 'cuda: NVIDIA H100 80GB HBM3' -> the name


def label(model, tag):
    return f"{model} [{tag}]" if tag else model


def build(runs, papers):
    cells = defaultdict(list)
    for r in runs:
        cells[(r["dataset"], r["model"], r["mode"], r.get("tag") or "")].append(r)

    def baseline_cell(dataset, model, mode, tag):
        for key in ((mode, tag), (mode, ""), ("augmented", tag), ("augmented", "")):
            if (dataset, model, *key) in cells:
                return (dataset, model, *key)
        return None

    def significance(rs, key):
        p, diff = wilcoxon(per_user(rs), per_user(cells[key]))
        return {"baseline": f"{label(key[1], key[3])} ({key[2]})", "p": p, "mean_diff": diff}

    summary = []
    for (dataset, model, mode, tag), rs in sorted(
        cells.items(),
        key=lambda kv: (kv[0][0], ORDER.index(kv[0][1]) if kv[0][1] in ORDER else 99, kv[0][3], kv[0][2]),
    ):
        row = {"dataset": dataset, "model": model, "tag": tag, "label": label(model, tag), "mode": mode,
               "seeds": sorted(r["seed"] for r in rs)}
        for m in METRICS:
            row[m] = mean_std([r["test"].get(m) for r in rs])
        row["valid_ndcg@10"] = mean_std([r["best_valid"].get("ndcg@10") for r in rs])
        row["epoch_s"] = float(np.median([epoch_time(r) for r in rs]))
        row["train_s_per_epoch"] = float(np.median([r["train_s_per_epoch"] for r in rs]))
        row["best_epoch"] = [r["best_epoch"] for r in rs]
        row["time_to_best_s"] = float(np.median([time_to_best(r) for r in rs]))
        row["wall_s"] = [round(r["wall_s"]) for r in rs]
        row["train_batch_size"] = rs[0]["train_batch_size"]
        row["L"] = rs[0]["MAX_ITEM_LIST_LENGTH"]
        row["device"] = ", ".join(sorted({device(r) for r in rs}))
        row["data"] = ", ".join(sorted({data_id(r) for r in rs}))
        row["stopped_by_budget"] = any(r.get("stopped_by_budget") for r in rs)
        row["past_early_stopping"] = sorted(r["seed"] for r in rs if r.get("trained_past_early_stopping"))
        row["papers"] = [{"source": k, **v} for k, v in paper_for(papers, dataset, model)]
        base = baseline_cell(dataset, BASELINE.get(model), mode, tag)  # None without a baseline
        if base:
            row["significance"] = significance(rs, base)
        if tag and (dataset, model, mode, "") in cells:
            row["vs_untagged"] = significance(rs, (dataset, model, mode, ""))
        summary.append(row)
    by = {(r["dataset"], r["model"], r["mode"], r["tag"]): r for r in summary}
    for (dataset, model, mode, tag), row in by.items():
        aug = by.get((dataset, model, "augmented", tag))
        if mode == "full_sequence" and aug:
            target = 0.98 * aug["valid_ndcg@10"][0]
            row["time_to_98pct_of_augmented_best_s"] = time_to_reach(cells[(dataset, model, mode, tag)], target)
    return summary


def fmt(ms, digits=4):
    m, s = ms
    if np.isnan(m):
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s else f"{m:.{digits}f}"


NOTES = (
    "Mean ± std over seeds. s/epoch and time to best use the median epoch time (training + "
    "validation) of each run; the wall time per run is the clock from start to end and also "
    "counts any time the machine spent on other work. \"time budget hit\": training stopped "
    "at the grid's per-run time limit before early stopping, so the model is under-trained. "
    "\"trained past early stopping\": a run continued under a larger budget although patience "
    "had already ended it (its record says at which epoch); its figures are not the protocol's."
)


def markdown(summary):
    lines = [
        "| dataset | model | mode | seeds | HR@5 | HR@10 | NDCG@5 | NDCG@10 | MRR@10 | paper NDCG@10 (HR@10)"
        " | rel. diff NDCG@10 | vs baseline (Wilcoxon, per-user NDCG@10) | batch | s/epoch | best epoch"
        " | time to best | wall time per run | device | data (.inter sha256) |",
        "|---|---|---|---:|---|---|---|---|---|---|---|---|---:|---:|---|---:|---|---|---|",
    ]
    for r in summary:
        paper, rel = "-", "-"
        if r["papers"]:
            p = r["papers"][0]
            paper = "; ".join(
                f"{q['ndcg@10']:.4f} ({q['hit@10']:.4f}) [{q['source']}]" for q in r["papers"] if "ndcg@10" in q
            )
            rel = f"{(r['ndcg@10'][0] - p['ndcg@10']) / p['ndcg@10'] * 100:+.1f}%"
        tests = [r[k] for k in ("significance", "vs_untagged") if k in r]
        sig = "; ".join(f"{s['mean_diff']:+.4f} vs {s['baseline']}, p={s['p']:.2g}" for s in tests) or "-"
        note = " (time budget hit)" if r["stopped_by_budget"] else ""
        if r.get("past_early_stopping"):
            note += f" (seeds {', '.join(map(str, r['past_early_stopping']))} trained past early stopping)"
        lines.append(
            f"| {r['dataset']} | {r['label']} | {r['mode']} | {len(r['seeds'])} | "
            + " | ".join(fmt(r[m]) for m in METRICS)
            + f" | {paper} | {rel} | {sig} | {r['train_batch_size']} | {r['epoch_s']:.1f} | "
            + ", ".join(str(e) for e in r["best_epoch"])
            + f" | {r['time_to_best_s'] / 60:.1f} min | "
            + ", ".join(f"{w / 60:.1f}" for w in r["wall_s"])
            + f" min{note} | {r['device']} | {r['data']} |"
        )
    return "\n".join(lines)


def time_to_reach(runs, target):
    """Median over runs of the (median-epoch-time) training time until validation NDCG@10
    first reaches ``target``; None when no run reaches it."""
    times = []
    for r in runs:
        hit = next((i for i, h in enumerate(r["history"]) if h["valid_ndcg@10"] >= target), None)
        if hit is not None:
            times.append((hit + 1) * epoch_time(r))
    return float(np.median(times)) if len(times) * 2 > len(runs) else None


def mode_comparison(summary):
    """Full-sequence vs augmented training for the plugin's models.

    "to the same NDCG" is the time full-sequence training needs until its validation
    NDCG@10 first reaches 98% of the augmented runs' best (mean over seeds), against the
    augmented runs' time to their best."""
    by = {(r["dataset"], r["label"], r["mode"]): r for r in summary}
    lines = [
        "| dataset | model | s/epoch augmented | s/epoch full_sequence | epoch speed-up | time to best augmented"
        " | time to best full_sequence | full_sequence time to 98% of augmented best | speed-up to the same NDCG"
        " | best valid NDCG@10 augmented | full_sequence | difference |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (dataset, model, mode), aug in sorted(by.items()):
        if mode != "augmented" or (dataset, model, "full_sequence") not in by:
            continue
        full = by[(dataset, model, "full_sequence")]
        va, vf = aug["valid_ndcg@10"][0], full["valid_ndcg@10"][0]
        reach = full["time_to_98pct_of_augmented_best_s"]
        reach_s = f"{reach / 60:.2f} min" if reach is not None else "not reached"
        ratio = f"{aug['time_to_best_s'] / reach:.1f}x" if reach else "-"
        budget = " (time budget hit)" if aug["stopped_by_budget"] else ""
        lines.append(
            f"| {dataset} | {model} | {aug['epoch_s']:.1f} | {full['epoch_s']:.1f} | {aug['epoch_s'] / full['epoch_s']:.1f}x | "
            f"{aug['time_to_best_s'] / 60:.1f} min{budget} | {full['time_to_best_s'] / 60:.1f} min | {reach_s} | {ratio} | "
            f"{va:.4f} | {vf:.4f} | {(vf - va) / va * 100:+.1f}% |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def plots(runs, summary, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = defaultdict(list)
    for r in runs:
        groups[(label(r["model"], r.get("tag")), r["mode"])].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    palette = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")  # one colour per curve
    for i, ((model, mode), rs) in enumerate(sorted(groups.items())):
        style = "-" if mode == "augmented" else "--"
        color = palette(i % palette.N)
        n = min(len(r["history"]) for r in rs)
        if n == 0:
            continue
        ys = np.mean([[h["valid_ndcg@10"] for h in r["history"][:n]] for r in rs], axis=0)
        t = np.median([epoch_time(r) for r in rs])
        name = f"{model} ({'aug' if mode == 'augmented' else 'full'})"
        axes[0].plot(np.arange(1, n + 1), ys, style, label=name, color=color)
        axes[1].plot(np.arange(1, n + 1) * t / 60, ys, style, label=name, color=color)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("training time (min, median epoch time x epochs)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("validation NDCG@10 (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    datasets = sorted({r["dataset"] for r in runs})
    fig.suptitle(f"Validation NDCG@10 per epoch ({', '.join(datasets)})")
    fig.tight_layout()
    fig.savefig(out / "valid_ndcg_per_epoch.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(summary)), 4.5), dpi=110)
    labels = [f"{r['label']}\n{'aug' if r['mode'] == 'augmented' else 'full'}" for r in summary]
    means = [r["ndcg@10"][0] for r in summary]
    stds = [r["ndcg@10"][1] if not np.isnan(r["ndcg@10"][1]) else 0 for r in summary]
    colors = ["tab:blue" if r["model"] in BASELINE else "tab:gray" for r in summary]
    ax.bar(range(len(summary)), means, yerr=stds, color=colors, capsize=3)
    for i, r in enumerate(summary):
        for p in r["papers"]:
            if "ndcg@10" in p:
                ax.plot(i, p["ndcg@10"], "r_", markersize=18, mew=2)
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("test NDCG@10 (mean ± std over seeds)")
    ax.set_title("Test NDCG@10 (blue: recbole-hyper, grey: RecBole baselines, red: paper)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ndcg_bars.png")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, nargs="+", help="one or more folders of run files")
    parser.add_argument("--out", default=None)
    parser.add_argument("--papers", default=str(Path(__file__).resolve().parent / "paper_numbers.yaml"))
    args = parser.parse_args()
    runs = [run for folder in args.runs for run in load_runs(Path(folder))]
    if not runs:
        raise SystemExit(f"no run files in {' '.join(args.runs)}")
    out = Path(args.out or Path(args.runs[0]).parent)
    out.mkdir(parents=True, exist_ok=True)
    papers = yaml.safe_load(Path(args.papers).read_text())
    summary = build(runs, papers)
    table = markdown(summary)
    modes = mode_comparison(summary)
    text = "## Test metrics\n\n" + table + "\n\n" + NOTES + "\n"
    if modes:
        text += "\n## Full-sequence vs augmented training\n\n" + modes + "\n"
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plots(runs, summary, out)
    print(text)
    print(f"written {out / 'table.md'}, summary.json and plots")


if __name__ == "__main__":
    main()
