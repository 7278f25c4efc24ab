"""Speed of the PyTorch selective scan and of a Mamba4Rec training step.

Part 1: forward + backward of ``recbole_hyper.selective_scan`` (torch backend)
against a naive PyTorch scan that materialises (batch, ED, L, N) tensors and
lets autograd differentiate the step loop, at Mamba4Rec's shapes (batch 256,
ED 128, N 32, L 50 and 200).  Also reports the bytes autograd keeps for the
backward pass.

Part 2: one training step (forward, CE loss over all items, backward, Adam)
of Mamba4Rec against RecBole's SASRec with its default configuration, same
batch, same L, same process, measured alternately.

Prints a table and writes JSON (default: benchmarks/results/scan_<device>.json).

    python -m benchmarks.perf.bench_scan              # full run (the naive scan at L=200 takes minutes)
    python -m benchmarks.perf.bench_scan --quick      # fewer repetitions, no naive L=200
    python -m benchmarks.perf.bench_scan --device cuda  # also our Triton kernels and mamba-ssm's, if installed

On CUDA, "ours (torch)" and "Mamba4Rec" are the PyTorch scan; "ours (triton)" and
"Mamba4Rec (triton)" the Triton kernels (``scan_backend: triton``); peak memory is
torch.cuda's peak allocation during one forward + backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import recbole_hyper
from benchmarks.common import ConfigStub, DatasetStub, device_name, run_metadata, sync
from recbole_hyper.compat import tune_allocator
from recbole_hyper.ops.scan import mamba_ssm_available, selective_scan, triton_available
from recbole_hyper.ops.scan_ref import selective_scan_ref


def naive_scan(u, delta, A, B, C, D):
    """The textbook scan (the tests' reference in the inputs' dtype): decays materialised, a loop over L."""
    return selective_scan_ref(u, delta, A, B, C, D, dtype=None)[0]


def scan_inputs(batch, ED, N, L, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    def r(*s):
        return torch.randn(*s, generator=g)
    t = dict(
        u=r(batch, ED, L),
        delta=F.softplus(r(batch, ED, L) - 1.0),
        A=-torch.exp(r(ED, N) * 0.5),
        B=r(batch, N, L),
        C=r(batch, N, L),
        D=torch.ones(ED),
    )
    return {k: v.to(device).requires_grad_() for k, v in t.items()}


def saved_bytes(fn):
    """Bytes of the tensors autograd saves for backward while running fn()."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def time_fwd_bwd(fn, inputs, device, reps):
    times = []
    for _ in range(reps):
        for v in inputs.values():
            v.grad = None
        sync(device)
        start = time.perf_counter()
        y = fn(**inputs)
        y.backward(torch.ones_like(y))
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench_scan(args, device):
    """Time each variant, alternating between them so that all see the same machine load.

    Each round runs the naive scan once (where it is timed) and every other
    variant ``reps // naive_reps`` times; speed-ups are ratios of medians
    and the median of the per-round ratios.
    """
    rows = []
    variants = {
        "ours (torch)": lambda **k: selective_scan(**k, backend="torch"),
        "naive (materialised)": naive_scan,
    }
    if device.type == "cuda" and triton_available():
        variants["ours (triton)"] = lambda **k: selective_scan(**k, backend="triton")
    if device.type == "cuda" and mamba_ssm_available():
        variants["mamba-ssm kernels"] = lambda **k: selective_scan(**k, backend="cuda")
    for L in args.lengths:
        inputs = scan_inputs(args.batch, args.ed, args.n, L, device)
        active = {
            name: fn
            for name, fn in variants.items()
            if not (name.startswith("naive") and L > args.naive_max_len)
        }
        mem, peak = {}, {}
        for name, fn in active.items():
            fn(**inputs)  # warm-up (and allocator growth, and Triton's compilation)
            _, mem[name] = saved_bytes(lambda: fn(**inputs))
            if device.type == "cuda":
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                time_fwd_bwd(fn, inputs, device, 1)
                peak[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
        naive_on = "naive (materialised)" in active
        rounds = args.naive_reps if naive_on else 1
        per_round = max(1, args.reps // rounds)
        times = {name: [] for name in active}
        round_ratio = []
        for _ in range(rounds):
            this_round = {}
            for name, fn in active.items():
                reps = 1 if name.startswith("naive") else per_round
                t = time_fwd_bwd(fn, inputs, device, reps)
                times[name] += t
                this_round[name] = statistics.median(t)
            if naive_on:
                round_ratio.append(this_round["naive (materialised)"] / this_round["ours (torch)"])
        for name in active:
            row = {
                "L": L,
                "variant": name,
                "median_s": statistics.median(times[name]),
                "times_s": times[name],
                "saved_for_backward_MB": mem[name] / 2**20,
                "peak_MB": peak.get(name),
            }
            rows.append(row)
            print(f"  scan L={L:4d} {name:22s} median {row['median_s']:8.3f} s", flush=True)
        if naive_on:
            ours = next(r for r in rows if r["L"] == L and r["variant"] == "ours (torch)")
            naive = next(r for r in rows if r["L"] == L and r["variant"].startswith("naive"))
            ours["speedup_vs_naive"] = naive["median_s"] / ours["median_s"]
            ours["speedup_per_round"] = round_ratio
    return rows


def build_models(L, n_items, device):
    import yaml
    from recbole.model.sequential_recommender.sasrec import SASRec

    from recbole_hyper.config import properties_dir

    common = {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length",
        "NEG_PREFIX": "neg_",
        "MAX_ITEM_LIST_LENGTH": L,
        "device": device,
        "loss_type": "CE",
    }
    rb_yaml = Path(sys.modules["recbole"].__file__).parent / "properties" / "model" / "SASRec.yaml"
    with open(rb_yaml) as f:
        sas_cfg = yaml.safe_load(f)
    sas_cfg["layer_norm_eps"] = float(sas_cfg["layer_norm_eps"])
    with open(properties_dir() / "model" / "Mamba4Rec.yaml") as f:
        mamba_cfg = yaml.safe_load(f)
    mamba_cfg.pop("train_neg_sample_args", None)
    data = DatasetStub({"item_id": n_items})
    sas = SASRec(ConfigStub({**common, **sas_cfg}), data).to(device)
    # "Mamba4Rec" is the PyTorch scan everywhere; the kernels are extra rows on CUDA.
    mamba_cfg["scan_backend"] = "torch"
    models = {"SASRec": sas}
    backends = {"Mamba4Rec": "torch"}
    if device.type == "cuda" and triton_available():
        backends["Mamba4Rec (triton)"] = "triton"
    if device.type == "cuda" and mamba_ssm_available():
        backends["Mamba4Rec (mamba-ssm)"] = "cuda"
    for name, backend in backends.items():
        torch.manual_seed(0)
        cfg = ConfigStub({**common, **mamba_cfg, "scan_backend": backend})
        models[name] = recbole_hyper.Mamba4Rec(cfg, data).to(device)
    return models, sas_cfg, mamba_cfg


def bench_steps(args, device):
    rows = []
    for L in args.lengths:
        models, sas_cfg, mamba_cfg = build_models(L, args.n_items, device)
        opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
        g = torch.Generator().manual_seed(1)
        batch = {
            "item_id_list": torch.randint(1, args.n_items, (args.batch, L), generator=g).to(device),
            "item_length": torch.full((args.batch,), L).to(device),
            "item_id": torch.randint(1, args.n_items, (args.batch,), generator=g).to(device),
        }
        times = {k: [] for k in models}
        for rep in range(args.step_reps + 1):  # the first round is warm-up
            for name, model in models.items():
                model.train()
                sync(device)
                start = time.perf_counter()
                opts[name].zero_grad()
                model.calculate_loss(batch).backward()
                opts[name].step()
                sync(device)
                if rep:
                    times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"L": L, "batch": args.batch, "n_items": args.n_items}
        for name in models:
            row[f"{name}_median_s"] = med[name]
            if name != "SASRec":
                row[f"ratio_{name}_over_SASRec"] = med[name] / med["SASRec"]
        for name in models:
            row[f"{name}_times_s"] = times[name]
        rows.append(row)
        print(
            f"  step L={L:4d} "
            + "  ".join(f"{n} {med[n]:.3f} s" for n in models)
            + f"  Mamba4Rec / SASRec {med['Mamba4Rec'] / med['SASRec']:.2f}",
            flush=True,
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ed", type=int, default=128)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--n-items", type=int, default=3707, help="items scored by the CE loss (ML-1M: 3707)")
    parser.add_argument("--repeats", "--reps", dest="reps", type=int, default=15)
    parser.add_argument("--naive-reps", type=int, default=5)
    parser.add_argument("--naive-max-len", type=int, default=200)
    parser.add_argument("--step-reps", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, naive scan only at L<=50")
    parser.add_argument("--no-tune-malloc", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.reps = args.step_reps = 3
        args.naive_reps = 1
        args.naive_max_len = 50
    device = torch.device(args.device)
    tuned = False if args.no_tune_malloc else tune_allocator()

    print(f"selective scan, batch {args.batch}, ED {args.ed}, N {args.n}, device {device}")
    scan_rows = bench_scan(args, device)
    print(f"training step, batch {args.batch}, {args.n_items} items")
    step_rows = bench_steps(args, device)

    print("\n| L | variant | fwd+bwd median (ms) | saved for backward (MB) | peak (MB) | speed-up vs naive |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in scan_rows:
        sp = r.get("speedup_vs_naive")
        pk = r.get("peak_MB")
        print(
            f"| {r['L']} | {r['variant']} | {r['median_s'] * 1e3:.1f} | {r['saved_for_backward_MB']:.0f} | "
            + (f"{pk:.0f}" if pk is not None else "-")
            + " | "
            + (f"{sp:.1f}x" if sp else "")
            + " |"
        )
    names = [k[: -len("_median_s")] for k in step_rows[0] if k.endswith("_median_s")] if step_rows else []
    print("\n| L | " + " | ".join(f"{n} step (s)" for n in names) + " | "
          + " | ".join(f"{n} / SASRec" for n in names if n != "SASRec") + " |")
    print("|---:|" + "---:|" * (2 * len(names) - 1))
    for r in step_rows:
        print(
            f"| {r['L']} | " + " | ".join(f"{r[n + '_median_s']:.3f}" for n in names) + " | "
            + " | ".join(f"{r[n + '_median_s'] / r['SASRec_median_s']:.2f}" for n in names if n != "SASRec")
            + " |"
        )

    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"scan_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **run_metadata(args),
        "device": device_name(device),
        "malloc_tuned": tuned,
    }
    out.write_text(json.dumps({"meta": meta, "scan": scan_rows, "step": step_rows}, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
