"""Registration, configuration, runner, errors and checkpoints with RecBole."""

import pickle
import sys

import pytest
import torch

import recbole_hyper
from recbole_hyper.config import DatasetNotFoundError, PluginConfig, properties_dir
from recbole_hyper.config.params import HyperParameterError
from recbole_hyper.registry import UnknownModelError, get_model_class
from tests.helpers import fast_config, prepare, run_cli


def test_stock_get_model_finds_plugin_model():
    from recbole.utils import get_model

    assert get_model("Mamba4Rec") is recbole_hyper.Mamba4Rec
    from recbole.utils import get_trainer

    assert issubclass(get_trainer(get_model("Mamba4Rec").type, "Mamba4Rec"), recbole_hyper.training.trainer.PluginTrainer)


def test_stock_config_reads_the_same_defaults_as_the_runner(in_tmp):
    import yaml
    from recbole.config import Config

    stock = Config(model="Mamba4Rec", dataset="ml-100k")
    ours = PluginConfig(model="Mamba4Rec", dataset="ml-100k")
    with open(properties_dir() / "model" / "Mamba4Rec.yaml") as f:
        keys = [k for k in yaml.safe_load(f) if k != "train_neg_sample_args"]
    assert keys
    for key in keys + ["metrics", "topk", "valid_metric", "eval_args"]:
        assert stock[key] == ours[key], key
    assert stock["d_state"] == 32 and stock["valid_metric"] == "NDCG@10"


def test_command_line_and_dict_override_yaml(in_tmp, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--d_state=8", "--learning_rate=1e-4"])
    config = PluginConfig(model="Mamba4Rec", dataset="ml-100k", config_dict={"d_state": 16, "expand": 3})
    assert config["d_state"] == 8  # command line beats config_dict
    assert config["expand"] == 3  # config_dict beats the model yaml
    assert config["learning_rate"] == 1e-4 and isinstance(config["learning_rate"], float)


def test_bpr_switches_negative_sampling_on(in_tmp):
    config = PluginConfig(model="Mamba4Rec", dataset="ml-100k", config_dict={"loss_type": "BPR"})
    assert config["train_neg_sample_args"]["distribution"] == "uniform"
    config = PluginConfig(model="Mamba4Rec", dataset="ml-100k")
    assert config["train_neg_sample_args"]["distribution"] == "none"


def test_unknown_model_is_reported_with_suggestions():
    with pytest.raises(UnknownModelError, match="Unknown model 'Mamba4rec'.*Mamba4Rec"):
        get_model_class("Mamba4rec")
    with pytest.raises(UnknownModelError, match="SASRec"):
        get_model_class("SASrec")
    assert get_model_class("SASRec").__name__ == "SASRec"


def test_missing_dataset_is_reported_before_loading(in_tmp):
    with pytest.raises(DatasetNotFoundError, match="ml-1m.*data_path"):
        PluginConfig(model="Mamba4Rec", dataset="ml-1m", config_dict={"data_path": str(in_tmp), "allow_download": False})
    # The stock pipeline gets the same check for the plugin's models.
    from recbole.config import Config

    with pytest.raises(DatasetNotFoundError):
        Config(model="Mamba4Rec", dataset="ml-1m", config_dict={"data_path": str(in_tmp), "allow_download": False})


def test_invalid_hyperparameters_are_listed_together(in_tmp):
    with pytest.raises(HyperParameterError) as err:
        PluginConfig(
            model="Mamba4Rec",
            dataset="ml-100k",
            config_dict={"d_state": -1, "loss_type": "XYZ", "dropout_prob": 1.5},
        )
    message = str(err.value)
    for key in ("d_state = -1", "loss_type = 'XYZ'", "dropout_prob = 1.5"):
        assert key in message
    assert "'CE', 'BPR'" in message


@pytest.mark.slow
def test_nccl_without_gpus_fails_before_any_process_starts(in_tmp):
    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs are visible")
    with pytest.raises(HyperParameterError, match="needs 2 CUDA GPUs"):
        recbole_hyper.run("Mamba4Rec", "ml-100k", config_dict={"ddp_backend": "nccl"}, nproc=2)
    assert not (in_tmp / "saved").exists()


@pytest.mark.slow
def test_stock_recbole_pipeline_trains_the_plugin_model(in_tmp):
    from recbole.quick_start import run_recbole

    result = run_recbole(model="Mamba4Rec", dataset="ml-100k", config_dict=fast_config())
    assert set(result["test_result"]) >= {"hit@10", "ndcg@10", "mrr@10"}
    # RecBole's own pipeline trains the same model as the plugin's runner: same seed, same metrics.
    ours = recbole_hyper.run_recbole_hyper(model="Mamba4Rec", dataset="ml-100k", config_dict=fast_config())
    assert dict(result["test_result"]) == dict(ours["test_result"])
    assert result["best_valid_score"] == ours["best_valid_score"]


@pytest.mark.slow
def test_checkpoints_load_back_on_current_torch(in_tmp):
    from recbole_hyper.models.mamba4rec import Mamba4Rec
    from recbole_hyper.training.trainer import PluginTrainer

    config, data, train, valid, test = prepare("Mamba4Rec", {"epochs": 2, "checkpoint_dir": str(in_tmp)})
    model = Mamba4Rec(config, train._dataset)
    trainer = PluginTrainer(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    path = trainer.saved_model_file
    # torch's default loader refuses RecBole checkpoints (the pickled Config) ...
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path)
    # ... the plugin's trainer reads them.
    result = trainer.evaluate(test, load_best_model=True)
    assert "ndcg@10" in result

    resumed = PluginTrainer(config, Mamba4Rec(config, train._dataset))
    resumed.resume_checkpoint(path)
    checkpoint = recbole_hyper.load_checkpoint(path)
    assert resumed.start_epoch == checkpoint["epoch"] + 1
    for key, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)

    loaded_config, loaded_model, *_ = recbole_hyper.load_data_and_model(path)
    assert isinstance(loaded_model, Mamba4Rec)
    for key, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(loaded_model.state_dict()[key], value)


@pytest.mark.slow
def test_runner_trains_and_prints_metrics(in_tmp):
    args = [f"--{k}={v}" for k, v in fast_config().items()]
    proc = run_cli(["--model=Mamba4Rec", "--dataset=ml-100k", *args], in_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Mamba4Rec on ml-100k" in proc.stdout
    assert "test  hit@5=" in proc.stdout and "ndcg@10=" in proc.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--model=NoSuchModel"], "Unknown model 'NoSuchModel'"),
        (["--dataset=ml-1m", "--data_path=nowhere", "--allow_download=False"], "Dataset 'ml-1m' not found"),
        (["--dataset=ml-1m", "--data_path=nowhere", "--download_url=http://127.0.0.1:9/ml-1m.zip"],
         "Dataset 'ml-1m' is not in its folder and could not be downloaded"),
        (["--d_state=-2"], "d_state = -2"),
    ],
)
@pytest.mark.slow
def test_runner_errors_are_one_clear_line(args, expected, in_tmp):
    proc = run_cli(args, in_tmp)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (in_tmp / "saved").exists()  # nothing was trained


def test_anomaly_detection_is_off_after_import():
    assert not torch.is_anomaly_enabled()


def test_stock_pipeline_full_sequence_mode(in_tmp):
    """RecBole's own pipeline picks the plugin's dataset class (full-sequence windows)."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    from recbole_hyper.data import PluginSequentialDataset, target_field

    config = Config(model="HM2Rec", dataset="ml-100k", config_dict=fast_config(train_mode="full_sequence"))
    dataset = create_dataset(config)
    assert isinstance(dataset, PluginSequentialDataset)
    train, _, _ = data_preparation(config, dataset)
    assert target_field(config) in next(iter(train))
    assert len(train._dataset) < 97171 // 5  # windows of up to L = 10, not the 97,171 prefixes
