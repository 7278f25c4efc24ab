"""Start-up cost of a run: building the dataset and its three splits.

Times ``create_dataset`` + ``data_preparation`` and the peak resident memory
of a fresh process, for the plugin's row building and for RecBole's own
per-row augmentation loop (the plugin before it built rows itself; in
full_sequence mode the windows are then cut from every augmented row).

    python -m benchmarks.perf.data_prep --dataset ml-1m --data_path ../datasets --modes full_sequence augmented

``--synthetic USERS`` measures a generated dataset instead: USERS users with
``--length`` interactions each over ``--items`` items (popularity ~ 1/rank^0.8),
written as an atomic file to a temporary folder.  Every run also times the
first training batch, and reports the process's whole peak resident memory.

    python -m benchmarks.perf.data_prep --synthetic 1000000 --length 20 --modes full_sequence --builders plugin
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, add_data_path, run_metadata, spawn_worker, worker_main, write_json
from benchmarks.efficiency import peak_rss_mb, reset_peak_rss, rss_mb


def measure(spec: dict) -> dict:
    from recbole.data import data_preparation

    import recbole_hyper  # noqa: F401
    from recbole_hyper.config import PluginConfig
    from recbole_hyper.data import PluginSequentialDataset, create_dataset

    if spec["builder"] == "recbole_loop":
        PluginSequentialDataset._vectorisable = lambda self: False
    settings = {"data_path": spec["data_path"], "train_mode": spec["mode"], "state": "WARNING"}
    settings.update(spec.get("settings") or {})
    config = PluginConfig(model="Mamba4Rec", dataset=spec["dataset"], config_dict=settings)
    before = rss_mb()
    reset_peak_rss()
    t0 = time.perf_counter()
    dataset = create_dataset(config)
    loaded = time.perf_counter()
    train, valid, test = data_preparation(config, dataset)
    seconds = time.perf_counter() - t0
    batch = next(iter(train))
    first_batch = time.perf_counter() - t0
    return {
        **{k: v for k, v in spec.items() if k != "settings"},
        "seconds": seconds,
        "load_s": loaded - t0,
        "first_batch_s": first_batch,
        "first_batch_rows": len(batch),
        "peak_rss_mb": peak_rss_mb() - before,
        "peak_rss_total_mb": peak_rss_mb(),
        "train_rows": len(train.dataset),
        "valid_rows": len(valid.dataset),
        "test_rows": len(test.dataset),
    }


def write_synthetic(folder: Path, users: int, length: int, items: int, seed: int = 0) -> str:
    """``folder/<name>/<name>.inter``: ``users`` x ``length`` interactions, positions as timestamps."""
    import numpy as np

    name = f"synthetic-{users}x{length}"
    (folder / name).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    cdf = np.cumsum(popularity / popularity.sum())
    with open(folder / name / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        chunk = max(1, 1_000_000 // length)
        for lo in range(0, users, chunk):
            n = min(chunk, users - lo)
            item = np.searchsorted(cdf, rng.random(n * length)) + 1
            user = np.repeat(np.arange(lo + 1, lo + n + 1), length)
            step = np.tile(np.arange(1, length + 1), n)
            lines = np.char.add(np.char.add(np.char.add(np.char.add(user.astype(str), "\t"), item.astype(str)), "\t"),
                                step.astype(str))
            f.write("\n".join(lines.tolist()) + "\n")
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    add_data_path(parser)
    parser.add_argument("--modes", nargs="+", default=["full_sequence", "augmented"])
    parser.add_argument("--builders", nargs="+", default=["recbole_loop", "plugin"])
    parser.add_argument("--synthetic", type=int, default=0, metavar="USERS", help="generate a dataset of USERS users")
    parser.add_argument("--length", type=int, default=20, help="interactions per synthetic user")
    parser.add_argument("--items", type=int, default=100_000, help="items of the synthetic catalog")
    parser.add_argument("--max-len", type=int, default=50, help="MAX_ITEM_LIST_LENGTH of synthetic runs")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/data_prep_<dataset>.json)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, measure)
    with tempfile.TemporaryDirectory() as data_tmp:
        dataset, data_path, settings = args.dataset, args.data_path, {}
        if args.synthetic:
            t0 = time.perf_counter()
            dataset = write_synthetic(Path(data_tmp), args.synthetic, args.length, args.items)
            print(f"wrote {dataset} ({args.synthetic * args.length:,} interactions) in {time.perf_counter() - t0:.0f} s")
            data_path = data_tmp
            settings = {
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "MAX_ITEM_LIST_LENGTH": args.max_len,
                "eval_batch_size": 4096,
            }
        rows = run_all(args, dataset, data_path, settings)
    if rows is None:
        return 1
    out = Path(args.out or RESULTS / f"data_prep_{dataset}.json")
    meta = run_metadata()
    write_json(out, {"machine": meta["processor"], "meta": meta, "runs": rows}, indent=1)
    print(f"-> {out}")
    return 0


def run_all(args, dataset, data_path, settings):
    rows = []
    print(f"{'mode':14s} {'rows built by':14s} {'load s':>7s} {'split s':>8s} {'batch s':>8s} "
          f"{'peak MB':>8s} {'(total)':>8s} {'train rows':>10s}")
    for mode in args.modes:
        for builder in args.builders:
            spec = {"dataset": dataset, "data_path": data_path, "mode": mode, "builder": builder, "settings": settings}
            with tempfile.TemporaryDirectory() as tmp:
                proc, row = spawn_worker(__spec__.name, spec, Path(tmp) / "row.json", capture=True)
            if row is None:
                print(proc.stderr[-2000:], file=sys.stderr)
                return None
            row.pop("data_path")  # a folder of this machine, not a result
            row["settings"] = settings
            rows.append(row)
            print(f"{mode:14s} {builder:14s} {row['load_s']:7.1f} {row['seconds'] - row['load_s']:8.1f} "
                  f"{row['first_batch_s'] - row['seconds']:8.2f} {row['peak_rss_mb']:8.0f} "
                  f"{row['peak_rss_total_mb']:8.0f} {row['train_rows']:10d}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
