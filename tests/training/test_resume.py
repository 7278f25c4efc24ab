"""Runs that survive interruption: a real SIGKILL, then ``resume``, ends where the
uninterrupted run ends (same test metrics, same weights)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recbole_hyper.compat import load_checkpoint
from recbole_hyper.training.resume import last_state_path
from tests.helpers import REPO, fast_config, run_snippet

# End-to-end: every test here trains through the runner or in a fresh process.
pytestmark = pytest.mark.slow

# Runs one training in a fresh process; with KILL_AT=e the process SIGKILLs itself
# when epoch e has been validated (its last state is not written yet, so the
# resumed run redoes that epoch). Prints the result as JSON.
SCRIPT = r"""
import json, os, signal, sys
import torch
torch.set_num_threads(1)
import recbole_hyper
from recbole_hyper.quick_start import run_recbole_hyper


args = json.loads(sys.argv[1])

class KillAt:
    def on_epoch(self, trainer, record):
        if record["epoch"] == args.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)

result = run_recbole_hyper(args.get("model"), args.get("dataset"), config_dict=args.get("config"),
                           hooks=[KillAt()], count_flops=False, resume=args.get("resume"))
print("RESULT " + json.dumps({"test": result["test_result"], "best": result["best_valid_score"],
                              "checkpoint": result["checkpoint"]}))
"""


def run_script(cwd: Path, **args):
    return run_snippet(SCRIPT, cwd, args)


def weights(path):
    return load_checkpoint(path)["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


CASES = {
    # HM2Rec: graph edge sampling, RiemannianAdam beside Adam, MoE step counters; augmented rows.
    "HM2Rec": dict(n_experts=2),
    # Mamba4Rec in full_sequence mode (its own shuffled windows).
    "Mamba4Rec": dict(train_mode="full_sequence"),
}


@pytest.mark.parametrize("model", list(CASES))
def test_killed_and_resumed_run_ends_like_the_uninterrupted_one(model, tmp_path):
    config = fast_config(epochs=4, stopping_step=10, train_batch_size=2048, **CASES[model])
    runs = {}
    for name in ("straight", "again"):
        (tmp_path / name).mkdir()
        rc, runs[name] = run_script(tmp_path / name, model=model, dataset="ml-100k", config=config)
        assert rc == 0, runs[name]

    killed = tmp_path / "killed"
    killed.mkdir()
    rc, out = run_script(killed, model=model, dataset="ml-100k", config=config, kill_at=2)
    assert rc == -signal.SIGKILL, out
    last = list((killed / "saved").glob("*.last.pth"))
    assert len(last) == 1
    state = load_checkpoint(last[0])
    assert state["epoch"] == 1  # epochs 0 and 1 done; the kill came after epoch 2's validation
    assert not list((killed / "saved").glob("*.tmp"))

    # Resumed from another working directory with the run's folder moved: the best checkpoint
    # is found beside the last state (the run recorded it as saved/<name>).
    moved = tmp_path / "moved"
    killed.rename(moved)
    killed = moved
    last = [moved / "saved" / last[0].name]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rc, resumed = run_script(elsewhere, resume=str(last[0]))
    assert rc == 0, resumed
    assert Path(resumed["checkpoint"]).parent == moved / "saved"

    straight, again = runs["straight"], runs["again"]
    assert again["test"] == straight["test"]
    assert resumed["test"] == straight["test"]
    assert resumed["best"] == straight["best"]
    # The resumed run kept writing the interrupted run's checkpoint files.
    assert Path(resumed["checkpoint"]).name == last[0].name.replace(".last.pth", ".pth")
    best_straight = weights(tmp_path / "straight" / straight["checkpoint"])
    assert_same_weights(weights(tmp_path / "again" / again["checkpoint"]), best_straight)
    assert_same_weights(weights(killed / resumed["checkpoint"]), best_straight)
    # Final weights (the last epoch's, not only the best) are identical too.
    final_straight = weights(last_state_path(tmp_path / "straight" / straight["checkpoint"]))
    assert_same_weights(weights(last_state_path(killed / resumed["checkpoint"])), final_straight)
    assert load_checkpoint(last_state_path(killed / resumed["checkpoint"]))["epoch"] == 3


def test_resume_rejects_bad_files_with_one_line(tmp_path):
    not_a_checkpoint = tmp_path / "x.pth"
    not_a_checkpoint.write_text("not a checkpoint")
    best_only = tmp_path / "best.pth"
    torch.save({"state_dict": {}}, best_only)
    for path, expected in (
        (tmp_path / "missing.last.pth", "no such file"),
        (not_a_checkpoint, "cannot be read"),
        (best_only, "not a last-state file"),
    ):
        proc = subprocess.run(
            [sys.executable, str(REPO / "run_recbole_hyper.py"), f"--resume={path}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --resume") and expected in lines[0], proc.stderr
        assert not (tmp_path / "saved").exists()


GRID_SET = ["epochs=4", "stopping_step=10", "MAX_ITEM_LIST_LENGTH=10", "hidden_size=16", "d_state=4",
            "train_batch_size=2048", "state=WARNING"]


def grid(out: Path, *extra, **popen):
    cmd = [sys.executable, "-m", "benchmarks.grid.run_grid", "--datasets", "ml-100k", "--models", "Mamba4Rec",
           "--modes", "augmented", "--seeds", "7", "--threads", "1", "--out", str(out), "--set", *GRID_SET, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The cell trained once without interruption (the reference for both tests below)."""
    out = tmp_path_factory.mktemp("straight")
    proc = grid(out)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]
    return json.loads(next(out.glob("*.json")).read_text())


def test_grid_resumes_an_interrupted_cell(tmp_path, straight):
    reference = straight
    out = tmp_path / "interrupted"
    first = grid(out)
    deadline = time.time() + 600
    while not list(out.glob("checkpoints/*/*.last.pth")):  # epoch 0 is done
        assert first.poll() is None and time.time() < deadline, "the cell ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the grid and its worker
    first.wait()
    assert not list(out.glob("*.json"))
    saved_epoch = load_checkpoint(next(out.glob("checkpoints/*/*.last.pth")))["epoch"]
    assert saved_epoch < 3

    second = grid(out)
    log = second.communicate(timeout=600)[0]
    assert second.returncode == 0, log[-3000:]
    assert f"resumed after epoch {saved_epoch}" in log
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["resumed_after_epochs"] == [saved_epoch]
    assert [h["epoch"] for h in record["history"]] == [0, 1, 2, 3]
    assert record["test"] == reference["test"]
    assert record["per_user_test_ndcg@10"] == reference["per_user_test_ndcg@10"]
    assert [h["valid_ndcg@10"] for h in record["history"]] == [h["valid_ndcg@10"] for h in reference["history"]]


def test_budget_stopped_cell_continues_as_a_new_variant(tmp_path, straight):
    out = tmp_path / "grid"
    # A budget of 6 ms: training stops after epoch 0 and the cell is tested there.
    short = grid(out, "--max-train-minutes", "0.0001")
    log = short.communicate(timeout=600)[0]
    assert short.returncode == 0, log[-3000:]
    (source,) = out.glob("*.json")
    source_text = source.read_text()
    assert json.loads(source_text)["stopped_by_budget"] is True
    assert [h["epoch"] for h in json.loads(source_text)["history"]] == [0]
    source_files = {p: p.read_bytes() for p in out.glob("checkpoints/*/*") if p.is_file()}

    longer = grid(out, "--tag", "longer", "--continue-from", "")
    log = longer.communicate(timeout=600)[0]
    assert longer.returncode == 0, log[-3000:]
    assert "reopened after its budget" in log
    record = json.loads(next(out.glob("*longer*.json")).read_text())
    assert record["continued_from"] == source.stem
    assert record["resumed_after_epochs"] == [0] and record["stopped_by_budget"] is False
    # Ends where the run without a budget ended.
    assert [h["epoch"] for h in record["history"]] == [0, 1, 2, 3]
    assert [h["valid_ndcg@10"] for h in record["history"]] == [h["valid_ndcg@10"] for h in straight["history"]]
    assert record["test"] == straight["test"]
    # The earlier cell, its result and checkpoints, are untouched.
    assert source.read_text() == source_text
    assert all(p.read_bytes() == data for p, data in source_files.items())
    assert len(list(out.glob("checkpoints/*longer*/*.pth"))) == 2  # its own best model and last state


def test_continue_from_needs_the_earlier_cells(tmp_path):
    proc = grid(tmp_path, "--tag", "longer", "--continue-from", "")
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2
    lines = log.strip().splitlines()
    assert lines[-1].startswith("error: --continue-from ''") and "run them first" in lines[-1], log
    assert not list(tmp_path.iterdir())


def test_continue_from_needs_a_last_state(tmp_path):
    # An earlier cell whose result is there but whose checkpoints were removed.
    listing = grid(tmp_path, "--dry-run").communicate(timeout=120)[0]
    (name,) = [line.strip() for line in listing.splitlines() if line.strip().endswith(".json")]
    (tmp_path / name).write_text("{}")
    proc = grid(tmp_path, "--tag", "longer", "--continue-from", "")
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2, log
    lines = log.strip().splitlines()
    assert lines[-1].startswith("error: --continue-from ''") and "no last state" in lines[-1], log
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
