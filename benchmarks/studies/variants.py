"""Variant studies of HM2Rec and HMamba: which component helps, which hurts, and why.

    python -m benchmarks.studies.variants run ladder --datasets ml-1m --seeds 2020 \\
        --data-path /path/to/datasets --set num_layers=2
    python -m benchmarks.studies.variants report ladder

A study is a list of variants, each one model with settings on top of its
defaults, trained as grid cells (``benchmarks.grid.run_grid``: one process per
cell, full_sequence mode, early stopping on validation NDCG@10; finished cells
are skipped, so an interrupted study resumes) and compared per user on the
test split (Wilcoxon signed-rank test of the per-user NDCG@10, mean over
seeds) with the variants it is defined against.

* ``ladder``: from Mamba4Rec to HM2Rec one component at a time.  Every rung is
  HM2Rec; the first has the graph branch, RoPE and the mixture of experts off,
  which is Mamba4Rec (same parameters, same scores), and each next rung adds
  one component: MoE, RoPE, the graph branch in Euclidean form (LightGCN
  propagation, no VGAE), hyperbolic geometry, the VGAE (= HM2Rec's defaults).
  Each rung is compared with the one before it and with the first.
* ``ablation``: HM2Rec's defaults and one component removed at a time, each
  against the full model (a smaller epoch budget: ``configs/ablations.yaml``).
* ``hm2rec_design``: HM2Rec's [design] switches one at a time (the projection
  initialised at zero, tangent parameters, the graph nodes' learning rate, the
  VGAE's weight, a shared expert, no structural loss), each against the
  defaults.
* ``hmamba``: HMamba Full and Half, without the norm regulariser, with a
  learned curvature and with the curvature-aware A, against Mamba4Rec.

Budgets are in epochs, never minutes: each dataset's ``full_sequence_defaults``
where it has them (ML-1M: 30 epochs, cosine schedule, validation every 2),
``configs/cpu.yaml`` elsewhere; ``--set`` adds settings to every variant (e.g.
``num_layers=2`` to compare at the dataset's chosen depth) and ``--suffix``
names that setting in the cells' tags.  ``report`` writes
``benchmarks/results/<study>/table.md`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

from benchmarks.common import CONFIGS as CONFIG_DIR
from benchmarks.common import REPO, RESULTS, add_data_path, module_command
from benchmarks.grid.report import data_id, epoch_time, load_runs, mean_std, per_user, wilcoxon

METRICS = ["hit@10", "ndcg@5", "ndcg@10"]


@dataclass(frozen=True)
class Variant:
    label: str
    model: str
    settings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    """Variants by tag (in table order) and, for each, the tags it is tested against."""

    title: str
    variants: Dict[str, Variant]
    against: Dict[str, Tuple[str, ...]]
    configs: Tuple[str, ...] = ()
    # Per-dataset settings for every variant, before the variant's own.
    dataset_settings: Dict[str, Tuple[str, ...]] = field(default_factory=dict)


def against_first(variants: Dict[str, Variant]) -> Dict[str, Tuple[str, ...]]:
    """Every variant after the first tested against the first."""
    first, *rest = variants
    return {tag: (first,) for tag in rest}


def ladder_against(variants: Dict[str, Variant]) -> Dict[str, Tuple[str, ...]]:
    """Every rung tested against the one before it and (from the third on) the first."""
    tags = list(variants)
    return {tag: tuple(dict.fromkeys((before, tags[0]))) for before, tag in zip(tags, tags[1:])}


_M4R_AS_HM2REC = ("use_graph=false", "rope_mode=none", "use_moe=false")
_LADDER = {
    "l0_mamba4rec": Variant("Mamba4Rec (HM2Rec with graph, RoPE, MoE off)", "HM2Rec", _M4R_AS_HM2REC),
    "l1_moe": Variant("+ MoE", "HM2Rec", ("use_graph=false", "rope_mode=none")),
    "l2_rope": Variant("+ RoPE", "HM2Rec", ("use_graph=false",)),
    "l3_graph": Variant("+ graph branch, Euclidean", "HM2Rec", ("use_hyperbolic=false", "use_vgae=false")),
    "l4_hyperbolic": Variant("+ hyperbolic", "HM2Rec", ("use_vgae=false",)),
    "l5_vgae": Variant("+ VGAE (= HM2Rec)", "HM2Rec"),
}
_ABLATION = {
    "full": Variant("HM2Rec (full)", "HM2Rec"),
    "no_hyperbolic": Variant("w/o hyperbolic", "HM2Rec", ("use_hyperbolic=false",)),
    "no_vgae": Variant("w/o VGAE", "HM2Rec", ("use_vgae=false",)),
    "no_rope": Variant("w/o RoPE", "HM2Rec", ("rope_mode=none",)),
    "no_moe": Variant("w/o MoE", "HM2Rec", ("use_moe=false",)),
}
_HM2REC_DESIGN = {
    "default": Variant("HM2Rec (defaults)", "HM2Rec"),
    "fuse_zero": Variant("fuse_init: zero", "HM2Rec", ("fuse_init=zero",)),
    "tangent": Variant("graph_parameters: tangent", "HM2Rec", ("graph_parameters=tangent",)),
    "graph_lr10": Variant("graph_lr_scale: 10", "HM2Rec", ("graph_lr_scale=10",)),
    "graph_lr01": Variant("graph_lr_scale: 0.1", "HM2Rec", ("graph_lr_scale=0.1",)),
    "vgae_w001": Variant("vgae_weight: 0.01", "HM2Rec", ("vgae_weight=0.01",)),
    "no_margin": Variant("graph_loss: none", "HM2Rec", ("graph_loss=none",)),
    "shared_expert": Variant("moe_shared_expert: True", "HM2Rec", ("moe_shared_expert=true",)),
}

LADDER = Study("From Mamba4Rec to HM2Rec, one component at a time", _LADDER, ladder_against(_LADDER))

ABLATION = Study(
    "HM2Rec without one component at a time",
    _ABLATION,
    against_first(_ABLATION),
    configs=("cpu.yaml", "ablations.yaml"),
    # HM2Rec propagates the whole graph at every step, so its epoch time is set by the number
    # of steps: on amazon-beauty 256 windows per batch at twice the rate, 4 epochs.
    dataset_settings={
        "amazon-beauty": ('full_sequence_defaults={"train_batch_size": 256, "learning_rate": 0.002}', "epochs=4"),
    },
)

HM2REC_DESIGN = Study("HM2Rec's [design] switches, one at a time", _HM2REC_DESIGN, against_first(_HM2REC_DESIGN))

HMAMBA = Study(
    "HMamba's variants against Mamba4Rec",
    {
        "mamba4rec": Variant("Mamba4Rec", "Mamba4Rec"),
        "full": Variant("HMamba Full (defaults)", "HMamba"),
        "full_noreg": Variant("Full, norm_reg_weight 0", "HMamba", ("norm_reg_weight=0",)),
        "full_learn_k": Variant("Full, learned curvature", "HMamba", ("learn_curvature=true",)),
        "full_aware_a": Variant("Full, curvature-aware A", "HMamba", ("curvature_aware_A=true",)),
        "half": Variant("HMamba Half", "HMamba", ("variant=half",)),
    },
    {
        "full": ("mamba4rec",),
        "full_noreg": ("full", "mamba4rec"),
        "full_learn_k": ("full", "mamba4rec"),
        "full_aware_a": ("full", "mamba4rec"),
        "half": ("full", "mamba4rec"),
    },
)

STUDIES = {"ladder": LADDER, "ablation": ABLATION, "hm2rec_design": HM2REC_DESIGN, "hmamba": HMAMBA}
# Where each study's cells and tables live (the ablation table predates the others).
FOLDERS = {"ablation": "ablations"}


def folder(name: str) -> Path:
    return RESULTS / FOLDERS.get(name, name)


def has_own_defaults(dataset: str) -> bool:
    """Whether the package's yaml for ``dataset`` has ``full_sequence_defaults`` (its own epochs and schedule)."""
    path = REPO / "properties" / "dataset" / f"{dataset}.yaml"
    return path.exists() and bool((yaml.safe_load(path.read_text()) or {}).get("full_sequence_defaults"))


def cell_tag(tag: str, suffix: str) -> str:
    return f"{tag}_{suffix}" if suffix else tag


def commands(study: Study, args) -> List[Tuple[str, List[str]]]:
    """(description, argv) of every cell, seed by seed so that an interrupted study has
    every variant of its first seeds."""
    python, _ = module_command("benchmarks.grid.run_grid")
    out = []
    for dataset in args.datasets:
        for seed in args.seeds:
            for tag in args.variants or study.variants:
                variant = study.variants[tag]
                cmd = [
                    *python, "--datasets", dataset, "--models", variant.model, "--modes", "full_sequence",
                    "--seeds", str(seed), "--tag", cell_tag(tag, args.suffix), "--out", str(args.out / "runs"),
                ]
                default = () if has_own_defaults(dataset) else ("cpu.yaml",)
                configs = [str(CONFIG_DIR / c) for c in study.configs or default]
                if configs:
                    cmd += ["--config", *configs]
                if args.data_path:
                    cmd += ["--data-path", args.data_path]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                settings = [*study.dataset_settings.get(dataset, ()), *variant.settings, *args.set]
                if settings:
                    cmd += ["--set", *settings]
                out.append((f"{dataset}: {variant.label}, seed {seed}", cmd))
    return out


def run(study: Study, args) -> int:
    _, env = module_command("benchmarks.grid.run_grid")
    failed = 0
    for description, cmd in commands(study, args):
        print(f"== {description}", flush=True)
        if args.dry_run:
            print(" ".join(cmd))
            continue
        failed += subprocess.run(cmd, env=env).returncode != 0
    return 1 if failed else 0


def summarise(study: Study, runs, suffix: str = "") -> List[dict]:
    """One row per (dataset, variant): test metrics (mean, std over seeds), best validation
    NDCG@10, epochs, and the per-user tests against the variants it is defined against."""
    tags = {cell_tag(tag, suffix): tag for tag in study.variants}
    by: Dict[Tuple[str, str], list] = {}
    for r in runs:
        tag = tags.get(r.get("tag") or "")
        if tag is not None and r.get("model") == study.variants[tag].model:
            by.setdefault((r["dataset"], tag), []).append(r)
    order = list(study.variants)
    summary = []
    for (dataset, tag), rs in sorted(by.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        row = {
            "dataset": dataset,
            "variant": tag,
            "label": study.variants[tag].label,
            "model": study.variants[tag].model,
            "settings": list(study.variants[tag].settings),
            "seeds": sorted(r["seed"] for r in rs),
            "valid_ndcg@10": mean_std([r["best_valid"].get("ndcg@10") for r in rs]),
            "s_per_epoch": mean_std([epoch_time(r) for r in rs])[0],
            "best_epochs": sorted(r["best_epoch"] for r in rs),
            "epochs_max": max(r["epochs_max"] for r in rs),
            "stopped_by_budget": any(r.get("stopped_by_budget") for r in rs),
            "threads": sorted({r.get("threads") for r in rs}, key=str),
            "train_batch_size": sorted({r["train_batch_size"] for r in rs}),
            "data": sorted({data_id(r) for r in rs}),
            "tests": [],
        }
        for m in METRICS:
            row[m] = mean_std([r["test"].get(m) for r in rs])
        for ref in study.against.get(tag, ()):
            base = by.get((dataset, ref))
            if base:
                p, diff = wilcoxon(per_user(rs), per_user(base))
                row["tests"].append({"against": ref, "ndcg@10_diff": diff, "p": p})
        summary.append(row)
    return summary


def markdown(study: Study, summary: List[dict]) -> str:
    lines = [
        f"# {study.title} (full_sequence, test split, mean ± std over seeds)",
        "",
        "Δ: per-user test NDCG@10 of the row minus that of the variant named (mean over seeds), with the"
        " Wilcoxon signed-rank p-value. Choices are made on the validation column.",
        "",
    ]
    for dataset in sorted({row["dataset"] for row in summary}):
        rows = [r for r in summary if r["dataset"] == dataset]
        lines += [
            f"## {dataset}",
            "",
            f"Data (`.inter` sha256): {', '.join(sorted({d for r in rows for d in r['data']}))}; "
            f"at most {max(r['epochs_max'] for r in rows)} epochs, early stopping on validation NDCG@10; "
            f"batch {', '.join(map(str, sorted({b for r in rows for b in r['train_batch_size']})))} windows; "
            f"torch threads {', '.join(map(str, sorted({t for r in rows for t in r['threads']}, key=str)))}. "
            "s/epoch: median training + validation time per epoch (see the study's notes for what shared the machine).",
            "",
            "| variant | settings | seeds | valid NDCG@10 | HR@10 | NDCG@5 | NDCG@10 | Δ NDCG@10 (p) | s/epoch | best epochs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            cells = [f"{row[m][0]:.4f} ± {row[m][1]:.4f}" for m in ["valid_ndcg@10", *METRICS]]
            tests = "; ".join(
                f"{t['ndcg@10_diff']:+.4f} vs {t['against']} (p={t['p']:.2g})" for t in row["tests"]
            ) or "—"
            budget = " (budget)" if row["stopped_by_budget"] else ""
            lines.append(
                f"| {row['label']} | {' '.join(f'`{s}`' for s in row['settings']) or 'defaults'} | {len(row['seeds'])} | "
                + " | ".join(cells)
                + f" | {tests} | {row['s_per_epoch']:.1f} | {', '.join(map(str, row['best_epochs']))}{budget} |"
            )
        lines.append("")
    return "\n".join(lines)


def report(study: Study, args) -> int:
    summary = summarise(study, load_runs(args.out / "runs"), args.suffix)
    if not summary:
        print(f"error: no runs of this study under {args.out / 'runs'}", file=sys.stderr)
        return 2
    text = markdown(study, summary)
    end = f"_{args.suffix}" if args.suffix else ""
    (args.out / f"table{end}.md").write_text(text + "\n")
    (args.out / f"summary{end}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the cells (resumable)")
    rep = sub.add_parser("report", help="write table.md and summary.json")
    for p in (r, rep):
        p.add_argument("study", choices=list(STUDIES))
        p.add_argument("--out", type=Path, default=None, help="the study's folder (default: benchmarks/results/<study>)")
        p.add_argument("--suffix", default="", help="appended to every cell's tag (name what --set changes)")
    r.add_argument("--datasets", nargs="+", default=["ml-100k"])
    r.add_argument("--variants", nargs="+", default=None, help="a subset of the study's variants")
    r.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings for every variant")
    add_data_path(r)
    r.add_argument("--threads", type=int, default=0, help="torch threads per cell (0: torch's default)")
    r.add_argument("--dry-run", action="store_true", help="print the cells' commands and exit")
    args = parser.parse_args(argv)
    study = STUDIES[args.study]
    args.out = args.out or folder(args.study)
    if args.command == "run":
        unknown = sorted(set(args.variants or ()) - set(study.variants))
        if unknown:
            parser.exit(2, f"error: {args.study} has no variant {', '.join(unknown)}; it has {', '.join(study.variants)}\n")
        if args.set and not args.suffix:
            parser.exit(2, "error: --set changes every variant: name the change with --suffix (part of each cell's tag)\n")
        return run(study, args)
    return report(study, args)


if __name__ == "__main__":
    sys.exit(main())
