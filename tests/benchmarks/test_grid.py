"""benchmarks.grid.run_grid: where it looks for datasets, and the cut-offs it evaluates at."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.grid import run_grid

REPO = Path(__file__).resolve().parents[2]
TINY = ["epochs=1", "MAX_ITEM_LIST_LENGTH=5", "hidden_size=8", "d_state=4", "train_batch_size=64", "state=WARNING"]


def grid(cwd: Path, *args, model="Mamba4Rec"):
    cmd = [sys.executable, "-m", "benchmarks.grid.run_grid", "--models", model, "--modes",
           "full_sequence", "--seeds", "7", "--threads", "1", "--out", "runs", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def write_tiny(data: Path) -> None:
    """20 users with 8 distinct items each, in data/tiny/tiny.inter."""
    rng = np.random.default_rng(0)
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(20):
        rows += [f"u{user}\ti{item}\t{t}" for t, item in enumerate(rng.choice(30, size=8, replace=False), start=1)]
    (data / "tiny").mkdir(parents=True)
    (data / "tiny" / "tiny.inter").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_relative_data_path_reaches_the_worker(tmp_path):
    # The worker runs in the output folder; a relative --data-path is read from where the grid was started.
    # HMamba's yaml evaluates at 10/20/40; the grid's cells are evaluated at the tables' 5/10/20.
    write_tiny(tmp_path / "data")
    proc = grid(tmp_path, "--datasets", "tiny", "--data-path", "data", "--set", *TINY, model="HMamba")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "tiny__HMamba__full_sequence__seed7.json").read_text())
    assert record["n_train_rows"] == 20
    assert sorted(record["test"]) == sorted(f"{m}@{k}" for m in ("hit", "ndcg", "mrr") for k in (5, 10, 20))


@pytest.mark.slow
def test_missing_dataset_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "data").mkdir()
    proc = grid(tmp_path, "--datasets", "ml-100k", "amazon-beauty", "--data-path", "data")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no atomic file for amazon-beauty"), proc.stderr
    assert str(tmp_path / "data" / "amazon-beauty" / "amazon-beauty.inter") in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_data_path_given_with_set_passes_the_dataset_check(tmp_path):
    # The workers take data_path from --set as well; the up-front check reads the same configuration.
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "tiny.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    proc = grid(tmp_path, "--datasets", "tiny", "--set", f"data_path={tmp_path / 'data'}", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "tiny__Mamba4Rec__full_sequence__seed7.json" in proc.stdout


@pytest.mark.slow
def test_budget_spent_after_the_last_epoch_is_not_a_budget_stop(tmp_path):
    # Training ran all its epochs (one); a budget it overran on the way did not cut anything short.
    write_tiny(tmp_path / "data")
    proc = grid(tmp_path, "--datasets", "tiny", "--data-path", "data", "--max-train-minutes", "0.0001", "--set", *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "tiny__Mamba4Rec__full_sequence__seed7.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [0]
    assert record["history"][0]["elapsed_s"] > 0.006 and record["stopped_by_budget"] is False


def test_budget_stops_only_training_that_would_go_on():
    from recbole_hyper.training.trainer import StopTraining

    trainer = SimpleNamespace()
    record = {"epoch": 4, "valid_score": 0.1, "train_s": 1.0, "eval_s": 0.1, "train_loss": 2.0, "elapsed_s": 5.0}
    # Early stopping or the last epoch ends training here anyway.
    for ends in ("early_stopping", "last_epoch"):
        recorder = run_grid.CellRecorder(budget_s=1.0)
        recorder.on_epoch(trainer, {**record, "ends": ends})
        assert recorder.budget_stopped is False
    # Epochs left and patience left: the budget ends it.
    with pytest.raises(StopTraining):
        recorder.on_epoch(trainer, {**record, "ends": None})
    assert recorder.budget_stopped is True
    # Within the budget nothing stops.
    recorder = run_grid.CellRecorder(budget_s=10.0)
    recorder.on_epoch(trainer, {**record, "ends": None})
    assert recorder.budget_stopped is False


def test_cells_record_the_sha256_of_their_data_files(tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.inter").write_bytes(b"abc")
    (tmp_path / "toy" / "toy.item").write_bytes(b"")
    (tmp_path / "toy" / "notes.txt").write_bytes(b"not read by RecBole")
    assert run_grid.data_sha256(str(tmp_path), "toy") == {
        "toy.inter": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",  # sha256("abc")
        "toy.item": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # sha256("")
    }
    bundled = set(run_grid.data_sha256(str(tmp_path), "ml-100k"))  # RecBole's copy, with its side files
    assert {"ml-100k.inter", "ml-100k.item", "ml-100k.user"} <= bundled
