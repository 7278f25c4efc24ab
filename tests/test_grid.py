"""benchmarks/run_grid.py: where it looks for datasets, and the cut-offs it evaluates at."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = ["epochs=1", "MAX_ITEM_LIST_LENGTH=5", "hidden_size=8", "d_state=4", "train_batch_size=64", "state=WARNING"]


def grid(cwd: Path, *args, model="Mamba4Rec"):
    cmd = [sys.executable, str(REPO / "benchmarks" / "run_grid.py"), "--models", model, "--modes",
           "full_sequence", "--seeds", "7", "--threads", "1", "--out", "runs", *args]
    return subprocess.run(cmd, cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)


def test_relative_data_path_reaches_the_worker(tmp_path):
    # The worker runs in the output folder; a relative --data-path is read from where the grid was started.
    # HMamba's yaml evaluates at 10/20/40; the grid's cells are evaluated at the tables' 5/10/20.
    rng = np.random.default_rng(0)
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(20):
        rows += [f"u{user}\ti{item}\t{t}" for t, item in enumerate(rng.choice(30, size=8, replace=False), start=1)]
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "tiny.inter").write_text("\n".join(rows) + "\n")
    proc = grid(tmp_path, "--datasets", "tiny", "--data-path", "data", "--set", *TINY, model="HMamba")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "tiny__HMamba__full_sequence__seed7.json").read_text())
    assert record["n_train_rows"] == 20
    assert sorted(record["test"]) == sorted(f"{m}@{k}" for m in ("hit", "ndcg", "mrr") for k in (5, 10, 20))


def test_missing_dataset_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "data").mkdir()
    proc = grid(tmp_path, "--datasets", "ml-100k", "amazon-beauty", "--data-path", "data")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no atomic file for amazon-beauty"), proc.stderr
    assert str(tmp_path / "data" / "amazon-beauty" / "amazon-beauty.inter") in lines[0]
    assert not (tmp_path / "runs").exists()


def test_data_path_given_with_set_passes_the_dataset_check(tmp_path):
    # The workers take data_path from --set as well; the up-front check reads the same configuration.
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "tiny.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    proc = grid(tmp_path, "--datasets", "tiny", "--set", f"data_path={tmp_path / 'data'}", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "tiny__Mamba4Rec__full_sequence__seed7.json" in proc.stdout
