"""Settings checked before any work starts: one message, exit status 2, nothing written."""

import pytest

from recbole_hyper.cli import main


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning_rate=abc"], "learning_rate = 'abc': must be a number > 0"),
        (["--train_batch_size=0"], "train_batch_size = 0: must be an integer >= 1"),
        (["--epochs=0"], "epochs = 0: must be an integer >= 1"),
        (["--model=SASRec", "--hidden_size=abc"], "hidden_size = 'abc': must be an integer"),
        (["--hiden_size=32"], "hiden_size: no such setting; did you mean hidden_size?"),
        (["--config_files=missing.yaml"], "config file missing.yaml not found"),
        (["--config_files=broken.yaml"], "config file broken.yaml is not valid yaml (line 2"),
        (["--config_files=list.yaml"], "must hold 'key: value' lines"),
    ],
)
def test_bad_settings_stop_before_anything_is_written(args, message, capsys, in_tmp):
    (in_tmp / "broken.yaml").write_text("epochs: [1, 2\nseed: 3\n")
    (in_tmp / "list.yaml").write_text("- epochs\n- 3\n")
    assert main(["--dataset=ml-100k", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert not any((in_tmp / d).exists() for d in ("log", "saved", "log_tensorboard"))


def test_a_key_unlike_any_setting_is_left_to_the_user(in_tmp):
    from recbole_hyper.config import PluginConfig

    config = PluginConfig(model="Mamba4Rec", dataset="ml-100k", config_dict={"my_experiment_tag": "a"})
    assert config["my_experiment_tag"] == "a"
