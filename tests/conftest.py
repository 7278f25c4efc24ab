"""Shared fixtures: small, fast configurations on RecBole's bundled ml-100k."""

import os

import pytest
import torch

import recbole_hyper  # noqa: F401  (registers the models)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Small enough that one epoch over ml-100k takes seconds on two CPU cores.
FAST = {
    "MAX_ITEM_LIST_LENGTH": 10,
    "hidden_size": 16,
    "d_state": 4,
    "train_batch_size": 512,
    "eval_batch_size": 4096,
    "epochs": 1,
    "show_progress": False,
    "state": "WARNING",
    "seed": 7,
}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary folder: RecBole writes log/, saved/ and log_tensorboard/ there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fast_config(**overrides):
    cfg = dict(FAST)
    cfg.update(overrides)
    return cfg


def prepare(model, config_dict=None, dataset="ml-100k"):
    """HyperConfig, dataset and the three dataloaders for ``model``."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_hyper.config import HyperConfig

    config = HyperConfig(model=model, dataset=dataset, config_dict=fast_config(**(config_dict or {})))
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    return config, data, train, valid, test
