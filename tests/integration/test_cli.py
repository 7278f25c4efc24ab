"""The `recbole-hyper` command's subcommands, in process: bad input gives one line and exit status 2."""

import pytest

from recbole_hyper.cli import main


@pytest.mark.parametrize("argv", [["--model=Mamba4Rc"], ["train", "--model=Mamba4Rc"]])
def test_train_is_the_default_subcommand(argv, capsys, in_tmp):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown model 'Mamba4Rc'") and "Did you mean Mamba4Rec" in err
    assert not list(in_tmp.iterdir()), "nothing is written before the checks pass"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model="], "--model is empty"),
        (["serve", "--model=Mamba4Rec"], "unknown subcommand 'serve'"),
        (["plot", __file__], "cannot be loaded with its data"),
        (["train", "--dataset= "], "--dataset is empty"),
        (["plot", "missing.pth"], "checkpoint missing.pth not found"),
        (["recommend", "missing.pth", "--users", "1"], "missing.pth"),
        (["tune", "--model=Mamba4Rec", "--params_file=missing.hyper"], "missing.hyper"),
    ],
)
def test_subcommands_report_a_bad_argument_in_one_line(argv, message, capsys, in_tmp):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
