"""Serving speed: checkpoint loading, streaming updates and batch recommendations.

* load: ``Recommender.from_checkpoint`` when the serving file beside the
  checkpoint must be made from the dataset (as for a checkpoint written
  without it) and when it is there;
* streaming: the time of one ``stream_step`` (one more item folded into the
  recurrent state) after histories of 10, 100 and 1,000 items, against
  re-encoding the whole history with ``forward`` for each new item, for
  batches of 1 and 256 sequences (medians of ``--repeats``);
* ``recommend``: top-10 for every user of the dataset, users per second.

    python -m benchmarks.perf.serving_speed CHECKPOINT [--histories 10 100 1000] [--batches 1 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, median_time, run_metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--histories", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 256])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]

    import torch

    import recbole_hyper  # noqa: F401
    from recbole_hyper.serving import Recommender, serving_path

    torch.set_num_threads(torch.get_num_threads())
    sidecar = serving_path(args.checkpoint)
    kept = sidecar.read_bytes() if sidecar.is_file() else None
    sidecar.unlink(missing_ok=True)
    t0 = time.perf_counter()
    Recommender.from_checkpoint(args.checkpoint)
    load_rebuild = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = Recommender.from_checkpoint(args.checkpoint)
    load_stored = time.perf_counter() - t0
    if kept is not None:
        sidecar.write_bytes(kept)
    model = rec.model
    print(f"{rec.config['model']} on {rec.config['dataset']}: load {load_rebuild:.2f} s making the serving file, "
          f"{load_stored:.2f} s with it")

    rows = []
    g = torch.Generator().manual_seed(0)
    for batch in args.batches:
        for length in args.histories:
            seqs = torch.randint(1, rec.n_items, (batch, length + 1), generator=g)
            with torch.no_grad():
                state = model.stream_start(batch)
                for t in range(length):
                    state = model.stream_step(seqs[:, t], state)

                def step():
                    model.stream_step(seqs[:, length], state)

                lengths = torch.full((batch,), length + 1)

                def reencode():
                    model.forward(seqs, lengths)

                s_step = median_time(step, args.repeats)
                s_full = median_time(reencode, max(3, args.repeats // 4))
            rows.append({"batch": batch, "history": length, "step_s": s_step, "reencode_s": s_full})
            print(f"  batch {batch:4d}  history {length:5d}: step {s_step * 1e3:8.2f} ms   "
                  f"re-encode {s_full * 1e3:9.2f} ms   ({s_full / s_step:6.1f}x)", flush=True)

    users = list(rec.user_index)
    t0 = time.perf_counter()
    frame = rec.recommend(users, k=10)
    rec_s = time.perf_counter() - t0
    print(f"  recommend(): {len(users)} users in {rec_s:.2f} s = {len(users) / rec_s:,.0f} users/s ({len(frame)} rows)")

    print("\n| batch | history | step (ms) | re-encode the history (ms) | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['history']:,} | {r['step_s'] * 1e3:.2f} | {r['reencode_s'] * 1e3:.2f} | "
              f"{r['reencode_s'] / r['step_s']:.1f}x |")
    out = Path(args.out or RESULTS / f"serving_{rec.config['dataset']}_cpu.json")
    out.write_text(json.dumps({
        "model": rec.config["model"], "dataset": rec.config["dataset"], **run_metadata(),
        "load_s": {"making_serving_file": load_rebuild, "with_serving_file": load_stored},
        "streaming": rows, "recommend": {"users": len(users), "seconds": rec_s, "users_per_s": len(users) / rec_s},
    }, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
