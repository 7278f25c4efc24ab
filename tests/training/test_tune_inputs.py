"""`recbole-hyper tune` with bad inputs, in process: checked before any trial, or reported whole."""

import pytest

from recbole_hyper.cli import main


def tune(tmp_path, tiny_dataset, space, *extra):
    (tmp_path / "space.hyper").write_text(space)
    return main(["tune", "--model=Mamba4Rec", "--dataset=tiny", f"--data_path={tiny_dataset}",
                 f"--params_file={tmp_path / 'space.hyper'}", f"--output_file={tmp_path / 'out.result'}",
                 "--epochs=1", "--state=ERROR", *extra])


@pytest.mark.parametrize(
    "space, extra, message",
    [
        ("learning_rate [0.1,0.2]\n", [], "line 1"),  # no type: RecBole skipped it silently
        ("\nlearning_rate uniform 0.1\n", [], "line 2: uniform takes 2 numbers"),
        ("learning_rate choice [0.1]\n", ["--algo=random", "--max_evals=0"], "--max_evals=0"),
        ("learning_rate choice [0.1]\n", ["--early_stop=-1"], "--early_stop=-1"),
    ],
)
def test_bad_search_settings_are_one_line_before_any_trial(space, extra, message, tmp_path, tiny_dataset, in_tmp, capsys):
    assert tune(tmp_path, tiny_dataset, space, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.result").exists() and not (in_tmp / "saved").exists()


def test_every_trial_failing_is_reported_with_a_result_file(tmp_path, tiny_dataset, in_tmp, capsys):
    assert tune(tmp_path, tiny_dataset, "hidden_size choice [-4,-8]\n") == 1
    out, err = capsys.readouterr()
    assert "2 trials, 2 failed" in out and "every trial failed" in err
    result = (tmp_path / "out.result").read_text()
    assert "hidden_size:-4\nFailed: HyperParameterError" in result and "hidden_size:-8\nFailed" in result
