"""Sampled softmax against full cross-entropy on large synthetic catalogs (CPU).

    python -m benchmarks.perf.bench_sampled_softmax            # 100k and 1M items

One training step's loss, forward and backward, for ``--targets`` outputs of
width ``--dim`` against an item table of 100k and 1M rows: the full
cross-entropy (the plugin's blocked ``linear_cross_entropy``, and torch's
``F.cross_entropy`` over the full logit matrix) and the sampled softmax
(``loss_type: SSM``) with 256, 1024 and 4096 shared uniform negatives.
Each configuration runs in its own process; peak memory is that process's
maximum resident set size above what it held once its inputs existed.
Prints a table and writes ``benchmarks/results/sampled_softmax_cpu.json``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, RESULTS, median_time, run_metadata, spawn_worker, worker_main, write_json


def measure(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from recbole_hyper.ops.cross_entropy import linear_cross_entropy
    from recbole_hyper.ops.sampled_softmax import CandidateSampler, sampled_softmax_loss

    torch.manual_seed(0)
    n, d, items = spec["targets"], spec["dim"], spec["items"]
    hidden = torch.randn(n, d, requires_grad=True)
    table = (torch.randn(items, d) * 0.1).requires_grad_()
    targets = torch.randint(1, items, (n,))
    sampler = CandidateSampler(items)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        hidden.grad = table.grad = None
        if spec["loss"] == "full_blocked":
            loss = linear_cross_entropy(hidden, table, targets)
        elif spec["loss"] == "full_logits":
            loss = F.cross_entropy(hidden @ table.T, targets)
        else:
            shared = sampler(spec["negatives"])
            pos = (hidden * table[targets]).sum(-1)
            loss = sampled_softmax_loss(pos, hidden @ table[shared].T, targets, shared, sampler.log_q)
        loss.backward()

    seconds = median_time(step, spec["repeats"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {**spec, "step_s": seconds, "peak_mib": (peak - base) / 1024, "threads": torch.get_num_threads()}


def total_memory_gib() -> float:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--targets", type=int, default=4096, help="outputs per step (e.g. 128 windows x 32 positions)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--negatives", nargs="+", type=int, default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-full-items", type=int, default=200_000,
                        help="run the full cross-entropy only up to this many items (1M: blocks of one row, minutes per step)")
    parser.add_argument("--out", default=str(RESULTS / "sampled_softmax_cpu.json"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, measure)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for items in args.items:
            configs = [("full_blocked", None), ("full_logits", None)] + [("ssm", k) for k in args.negatives]
            for loss, negatives in configs:
                if loss.startswith("full") and items > args.max_full_items:
                    print(f"{items:>9,} items  {loss}: skipped (--max-full-items)", flush=True)
                    rows.append(dict(loss=loss, negatives=None, items=items, skipped="above --max-full-items"))
                    continue
                need_gib = args.targets * items * 4 * 3 / 2**30  # logits, their softmax gradient, a buffer
                if loss == "full_logits" and need_gib > 0.5 * total_memory_gib():
                    print(f"{items:>9,} items  full_logits: skipped, would need ~{need_gib:.0f} GiB", flush=True)
                    rows.append(dict(loss=loss, negatives=None, items=items, skipped=f"needs ~{need_gib:.0f} GiB"))
                    continue
                spec = dict(loss=loss, negatives=negatives, items=items, targets=args.targets, dim=args.dim,
                            repeats=args.repeats)
                proc, record = spawn_worker(__spec__.name, spec, Path(tmp) / "cell.json", capture=True)
                if record is None:
                    print(f"{items} items, {loss}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}")
                    continue
                rows.append(record)
                print(f"{items:>9,} items  {loss:13s} {str(negatives or ''):>5s}  {record['step_s'] * 1000:9.1f} ms"
                      f"  {record['peak_mib']:8.0f} MiB", flush=True)
    print()
    lines = ["| items | loss | negatives | step (ms) | peak memory (MiB) | vs full CE (blocked) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['items']:,} | {r['loss']} | — | not run ({r['skipped']}) | — | — |")
            continue
        ref = next((x for x in rows if x["items"] == r["items"] and x["loss"] == "full_blocked" and "step_s" in x), None)
        speed = f"{ref['step_s'] / r['step_s']:.1f}x faster" if ref else "—"
        lines.append(
            f"| {r['items']:,} | {r['loss']} | {r['negatives'] or '—'} | {r['step_s'] * 1000:.1f} | "
            f"{r['peak_mib']:.0f} | {speed} |"
        )
    print("\n".join(lines))
    result = {"meta": run_metadata(args), "rows": rows, "table": lines}
    out = Path(args.out)
    write_json(out, result, indent=1)
    print(f"\nwritten to {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
