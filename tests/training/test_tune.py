"""`recbole-hyper tune`: RecBole's HyperTuning over the plugin's models, in a fresh process."""

import re

import pytest

from tests.helpers import run_cli

# End-to-end: every test here trains through the runner or in a fresh process.
pytestmark = pytest.mark.slow

TINY_ARGS = ["--epochs=2", "--MAX_ITEM_LIST_LENGTH=10", "--train_batch_size=4", "--hidden_size=8",
             "--d_state=4", "--state=ERROR", "--seed=3"]


def tune(tmp_path, tiny_dataset, space: str, *extra):
    (tmp_path / "space.hyper").write_text(space)
    return run_cli(
        ["tune", "--model=Mamba4Rec", "--dataset=tiny", f"--data_path={tiny_dataset}", "--params_file=space.hyper",
         "--output_file=out.result", *TINY_ARGS, *extra],
        cwd=tmp_path,
    )


def valid_scores(result_text):
    """Valid NDCG@10 of each trial in RecBole's result file, by parameter line."""
    scores = {}
    for block in result_text.strip().split("\n\n"):
        lines = block.splitlines()
        if len(lines) > 1 and lines[1].startswith("Valid result"):
            scores[lines[0]] = float(re.search(r"ndcg@10 : ([0-9.]+)", block).group(1))
    return scores


def test_two_trials_and_the_best_is_the_best_valid_score(tmp_path, tiny_dataset):
    proc = tune(tmp_path, tiny_dataset, "learning_rate choice [0.01,0.0001]\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = (tmp_path / "out.result").read_text()
    scores = valid_scores(result)
    assert set(scores) == {"learning_rate:0.01", "learning_rate:0.0001"}
    best = max(scores, key=scores.get)
    assert "2 trials, 0 failed" in proc.stdout
    assert f"best params: {best.replace(':', '=')}" in proc.stdout
    assert f"best valid score: {scores[best]:.4f}" in proc.stdout
    # Each trial had the plugin's configuration: its checkpoint is a plugin checkpoint of Mamba4Rec.
    assert len(list((tmp_path / "saved").glob("Mamba4Rec-*.pth"))) >= 1


def test_a_failing_trial_is_reported_and_the_search_goes_on(tmp_path, tiny_dataset):
    proc = tune(tmp_path, tiny_dataset, "hidden_size choice [-4,8]\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial failed (hidden_size:-4)" in proc.stdout
    assert "2 trials, 1 failed" in proc.stdout
    assert "best params: hidden_size=8" in proc.stdout
    result = (tmp_path / "out.result").read_text()
    assert "hidden_size:8\nValid result" in result
    assert "hidden_size:-4\nFailed: HyperParameterError" in result


def test_bad_inputs_exit_2_with_one_line(tmp_path, tiny_dataset):
    for args, expected in (
        (["--params_file=missing.hyper"], "no params file"),
        (["--model=Mamba4rec", "--params_file=space.hyper"], "Did you mean Mamba4Rec"),
    ):
        (tmp_path / "space.hyper").write_text("learning_rate choice [0.01]\n")
        proc = run_cli(["tune", f"--data_path={tiny_dataset}", "--dataset=tiny", "--model=Mamba4Rec", *args], cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[0].startswith("error:") and expected in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    (tmp_path / "bad.hyper").write_text("learning_rate normal 0,1\n")
    proc = run_cli(["tune", "--model=Mamba4Rec", "--params_file=bad.hyper"], cwd=tmp_path)
    assert proc.returncode == 2 and "line 1" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
