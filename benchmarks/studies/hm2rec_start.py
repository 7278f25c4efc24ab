"""HM2Rec's first epochs before and after the VGAE fusion fix, beside Mamba4Rec.

    python -m benchmarks.studies.hm2rec_start

Reads run files of ``run_grid.py`` (validation NDCG@10 per epoch) and writes
``benchmarks/results/ablations/start/curves.png`` and ``curves.md``:

* Mamba4Rec and HM2Rec (model as of the previous release: the reparameterised
  VGAE sample in the item table during training) from the ml-100k grid;
* the diagnosis runs under ``start/runs/``: the previous HM2Rec without the
  VGAE, with VGAE weight 0 (the noise without the loss), and the current
  HM2Rec with ``vgae_fusion`` mean (default) and sample, and its other
  switches, 8 epochs each, seed 2020.
"""

from __future__ import annotations

import json

from benchmarks.common import RESULTS

GRID = RESULTS / "ml-100k" / "runs"
START = RESULTS / "ablations" / "start"

CURVES = [
    ("Mamba4Rec", GRID / "ml-100k__Mamba4Rec__full_sequence__seed2020.json"),
    ("HM2Rec before (grid run)", GRID / "ml-100k__HM2Rec__full_sequence__seed2020.json"),
    ("before, w/o VGAE", START / "runs" / "ml-100k__HM2Rec-before_novgae__full_sequence__seed2020.json"),
    ("before, VGAE weight 0", START / "runs" / "ml-100k__HM2Rec-before_vgae0__full_sequence__seed2020.json"),
    ("after: vgae_fusion mean (default)", START / "runs" / "ml-100k__HM2Rec-new__full_sequence__seed2020.json"),
    ("after, vgae_fusion sample", START / "runs" / "ml-100k__HM2Rec-sample__full_sequence__seed2020.json"),
    ("after, vgae_fusion residual", START / "runs" / "ml-100k__HM2Rec-residual__full_sequence__seed2020.json"),
    # The default again, after Lorentz maps stopped depending on TorchScript's call count (rounding only).
    ("after: mean, rerun on current code", START / "runs" / "ml-100k__HM2Rec-mean2__full_sequence__seed2020.json"),
    ("after, graph_loss none", START / "runs" / "ml-100k__HM2Rec-nomargin__full_sequence__seed2020.json"),
    ("after, inner-product decoder", START / "runs" / "ml-100k__HM2Rec-ip__full_sequence__seed2020.json"),
    ("after, KL scale kipf", START / "runs" / "ml-100k__HM2Rec-kipf__full_sequence__seed2020.json"),
    ("after, Euclidean", START / "runs" / "ml-100k__HM2Rec-euclid__full_sequence__seed2020.json"),
]
EPOCHS = 8


def main() -> int:
    rows = []
    for label, path in CURVES:
        if not path.exists():
            print(f"missing: {path.name}")
            continue
        run = json.loads(path.read_text())
        values = [h["valid_ndcg@10"] for h in run["history"]][:EPOCHS]
        rows.append((label, values, run["test"].get("ndcg@10")))
    lines = [
        "# HM2Rec's first epochs on ml-100k (full_sequence, seed 2020, validation NDCG@10)",
        "",
        "Test NDCG@10: of the best validation epoch within the run's budget.",
        "",
        "| run | " + " | ".join(f"ep {e}" for e in range(EPOCHS)) + " | test NDCG@10 |",
        "|---|" + "---|" * EPOCHS + "---|",
    ]
    for label, values, test in rows:
        cells = [f"{v:.4f}" for v in values] + [""] * (EPOCHS - len(values))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {test:.4f} |")
    START.mkdir(parents=True, exist_ok=True)
    (START / "curves.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, values, _ in rows:
        style = "-" if label.startswith(("after: ", "Mamba4Rec", "HM2Rec before")) else ":"
        ax.plot(range(len(values)), values, style, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("HM2Rec's start on ml-100k, before and after the VGAE fusion fix")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(START / "curves.png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
