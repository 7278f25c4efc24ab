"""Start-up cost of a run: building the dataset and its three splits.

Times ``create_dataset`` + ``data_preparation`` and the peak resident memory
of a fresh process, for the plugin's row building and for RecBole's own
per-row augmentation loop (the plugin before it built rows itself; in
full_sequence mode the windows are then cut from every augmented row).

    python benchmarks/data_prep.py --dataset ml-1m --data_path ../datasets --modes full_sequence augmented
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import add_data_path, run_metadata, spawn_worker, worker_main  # noqa: E402
from benchmarks.efficiency import peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402


def measure(spec: dict) -> dict:
    from recbole.data import data_preparation

    import recbole_hyper  # noqa: F401
    from recbole_hyper.config import HyperConfig
    from recbole_hyper.data import HyperSequentialDataset, create_dataset

    if spec["builder"] == "recbole_loop":
        HyperSequentialDataset._vectorisable = lambda self: False
    config = HyperConfig(
        model="Mamba4Rec",
        dataset=spec["dataset"],
        config_dict={"data_path": spec["data_path"], "train_mode": spec["mode"], "state": "WARNING"},
    )
    before = rss_mb()
    reset_peak_rss()
    t0 = time.perf_counter()
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    seconds = time.perf_counter() - t0
    return {
        **spec,
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb() - before,
        "train_rows": len(train.dataset),
        "valid_rows": len(valid.dataset),
        "test_rows": len(test.dataset),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    add_data_path(parser)
    parser.add_argument("--modes", nargs="+", default=["full_sequence", "augmented"])
    parser.add_argument("--builders", nargs="+", default=["recbole_loop", "plugin"])
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/data_prep_<dataset>.json)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, measure)
    rows = []
    print(f"{'mode':14s} {'rows built by':14s} {'seconds':>8s} {'peak MB':>8s} {'train rows':>10s}")
    for mode in args.modes:
        for builder in args.builders:
            spec = {"dataset": args.dataset, "data_path": args.data_path, "mode": mode, "builder": builder}
            with tempfile.TemporaryDirectory() as tmp:
                proc, row = spawn_worker(__file__, spec, Path(tmp) / "row.json", capture=True)
            if row is None:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            row.pop("data_path")  # a folder of this machine, not a result
            rows.append(row)
            print(f"{mode:14s} {builder:14s} {row['seconds']:8.1f} {row['peak_rss_mb']:8.0f} {row['train_rows']:10d}")
    out = Path(args.out or REPO / "benchmarks" / "results" / f"data_prep_{args.dataset}.json")
    meta = run_metadata()
    out.write_text(json.dumps({"machine": meta["processor"], "meta": meta, "runs": rows}, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
