"""Cross-entropy over every item: full logits against the blocked form, forward and backward.

At the shape of a full-sequence batch on ML-1M (about 14,600 targets in 128
windows at L = 200, 3,417 items, d = 64): the median time of
``F.cross_entropy(h @ table.T, y)`` and of
:func:`recbole_hyper.ops.cross_entropy.linear_cross_entropy` with several
block sizes, each with its backward pass.

    python -m benchmarks.perf.bench_cross_entropy [--targets 14600] [--items 3417]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, run_metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=14600)
    parser.add_argument("--items", type=int, default=3417)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--blocks", nargs="+", type=int, default=[128, 256, 306, 512, 1024], help="rows per block")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(RESULTS / "cross_entropy_cpu.json"))
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from recbole_hyper.ops.cross_entropy import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.targets, args.dim, generator=g)
    table = 0.1 * torch.randn(args.items, args.dim, generator=g)
    targets = torch.randint(1, args.items, (args.targets,), generator=g)

    def full():
        h, t = hidden.clone().requires_grad_(), table.clone().requires_grad_()
        F.cross_entropy(h @ t.t(), targets).backward()

    def blocked(rows):
        def run():
            h, t = hidden.clone().requires_grad_(), table.clone().requires_grad_()
            linear_cross_entropy(h, t, targets, block_elements=rows * args.items).backward()
        return run

    variants = [("full logits", full)] + [(f"blocks of {r} rows", blocked(r)) for r in args.blocks]
    times = {name: [] for name, _ in variants}
    for name, fn in variants:
        fn()  # warm-up
    for _ in range(args.repeats):  # alternate the variants so drift hits them alike
        for name, fn in variants:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(v) for name, v in times.items()}
    base = medians["full logits"]
    print(f"{args.targets} targets x {args.items} items, d = {args.dim}, torch threads {torch.get_num_threads()}")
    print("| variant | forward + backward (s) | vs full logits |")
    print("|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} | {base / value:.2f}x |")
    Path(args.out).write_text(json.dumps({
        **run_metadata(args), "median_s": medians,
    }, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
