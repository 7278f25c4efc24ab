"""How much the order of same-second ratings moves ML-1M results.

MovieLens-1M users often rate many movies within the same second, so the
order of a sequence is partly arbitrary.  RecBole's own ``ml-1m.inter`` keeps
``ratings.dat``'s line order among equal timestamps (its sort is stable, and
loading the timestamps as float32 merges times within 64 seconds); the
benchmark copy of ML-1M that has no real timestamps orders ties as its source
preprocessing did.  The real timestamps are public only for users 1-2999 (the
first 487,650 lines of ``ratings.dat``).  This script builds both versions for
those users and trains the same model on each:

* ``ml-1m-u2999-copy``: the benchmark copy's order (its positions as times);
* ``ml-1m-u2999-ratings``: ``ratings.dat``'s lines with their real times,
  ordered by RecBole exactly as its official file would be.

    python -m benchmarks.studies.ml1m_ties --ml1m ../datasets/ml-1m/ml-1m.inter \\
        --ratings ratings_head.dat.gz --work /path/to/scratch --seeds 2020

The datasets are written under ``--work`` (never into the repository); the
runs go through ``run_grid.py`` with ML-1M's dataset settings and land in
``benchmarks/results/ml-1m-old-copy/ties/``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import CONFIGS, REPO, RESULTS, module_command

NAMES = ("ml-1m-u2999-copy", "ml-1m-u2999-ratings")


def read_ratings(path: Path):
    """(user, item, time) in file order from a ``ratings.dat`` (optionally gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="latin-1") as f:
        for line in f:
            user, item, _, time = line.strip().split("::")
            yield user, item, time


def read_copy(path: Path, users: set):
    """Each user's (item, position) rows of the benchmark copy, in position order."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            user, item, position = line.rstrip("\n").split("\t")
            if user in users:
                rows.setdefault(user, []).append((float(position), item))
    return {u: [item for _, item in sorted(r)] for u, r in rows.items()}


def write_inter(folder: Path, name: str, rows) -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    with open(folder / name / f"{name}.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, item, time in rows:
            f.write(f"{user}\t{item}\t{time}\n")


def build(args) -> dict:
    ratings = list(read_ratings(Path(args.ratings)))
    last_user = ratings[-1][0]
    # The last user of a truncated file may be incomplete: keep users before it
    # unless the file ends exactly at a user boundary (then it is complete too).
    complete = {u for u, _, _ in ratings if u != last_user}
    copy = read_copy(Path(args.ml1m), complete | {last_user})
    if len(copy.get(last_user, [])) == sum(1 for u, _, _ in ratings if u == last_user):
        complete.add(last_user)
    ratings = [r for r in ratings if r[0] in complete]
    by_user = {}
    for user, item, time in ratings:
        by_user.setdefault(user, set()).add(item)
    mismatched = [u for u in complete if set(copy[u]) != by_user[u]]
    if mismatched:
        raise SystemExit(f"the two sources disagree on the items of {len(mismatched)} users, e.g. {mismatched[:3]}")
    work = Path(args.work)
    write_inter(work, NAMES[1], ratings)
    write_inter(work, NAMES[0], ((u, item, t) for u in sorted(complete, key=int) for t, item in enumerate(copy[u], 1)))
    # Where the two orders put a different item last (the test target) or second
    # to last (validation); RecBole reads the times as float32 and keeps file order among equal ones.
    real = {}
    for user, item, time in ratings:
        real.setdefault(user, []).append((float(np.float32(time)), len(real.get(user, [])), item))
    differ_test = differ_valid = 0
    for u in complete:
        ordered = [item for _, _, item in sorted(real[u])]
        differ_test += ordered[-1] != copy[u][-1]
        differ_valid += ordered[-2] != copy[u][-2]
    return {"users": len(complete), "interactions": len(ratings),
            "test_target_differs": differ_test, "valid_target_differs": differ_valid}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ml1m", required=True, help="the benchmark copy's ml-1m.inter")
    parser.add_argument("--ratings", required=True, help="ratings.dat (or the public first 487,650 lines), .gz allowed")
    parser.add_argument("--work", required=True, help="folder for the two datasets (outside the repository)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020])
    parser.add_argument("--models", nargs="+", default=["Mamba4Rec"])
    parser.add_argument("--config", nargs="*", default=[str(CONFIGS / "cpu.yaml")])
    parser.add_argument("--out", default=str(RESULTS / "ml-1m-old-copy" / "ties"))
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()

    facts = build(args)
    print(json.dumps(facts))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "datasets.json").write_text(json.dumps(facts, indent=1) + "\n")
    # ML-1M's own dataset settings (filters, L, full_sequence defaults) for both subsets.
    settings = yaml.safe_load((REPO / "properties" / "dataset" / "ml-1m.yaml").read_text())
    config = Path(args.work) / "ml-1m-settings.yaml"
    config.write_text(yaml.safe_dump(settings))
    if args.build_only:
        return 0
    python, env = module_command("benchmarks.grid.run_grid")
    command = [*python, "--datasets", *NAMES,
               "--data_path", str(Path(args.work).resolve()), "--models", *args.models,
               "--modes", "full_sequence", "--seeds", *map(str, args.seeds),
               "--config", *args.config, str(config), "--out", str(out / "runs")]
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
