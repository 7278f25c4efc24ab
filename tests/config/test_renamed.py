"""Renamed settings keep working under their old names (one warning each), in configurations and
in checkpoints written before the rename; classes pickled under their old names still load."""

import warnings

import pytest
import torch

from recbole_hyper.config import PluginConfig
from tests.helpers import fast_config


def _config(tiny_dataset, **settings):
    return PluginConfig(
        model="Mamba4Rec",
        dataset="tiny",
        config_dict=fast_config(data_path=tiny_dataset, **settings),
    )


def test_old_sampled_softmax_names_map_to_the_new_ones_with_one_warning_each(tiny_dataset, in_tmp):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        config = _config(tiny_dataset, loss_type="SSM", ssm_negatives=5, ssm_sampler="popularity", ssm_logq=False)
    assert config["loss_type"] == "SampledSoftmax"
    assert config["sampled_softmax_negatives"] == 5
    assert config["sampled_softmax_sampler"] == "popularity"
    assert config["sampled_softmax_logq"] is False
    assert "ssm_negatives" not in config.final_config_dict
    messages = [str(w.message) for w in seen if issubclass(w.category, FutureWarning)]
    for old in ("'ssm_negatives'", "'ssm_sampler'", "'ssm_logq'", "'SSM'"):
        assert sum(old in m for m in messages) == 1, (old, messages)


def test_the_new_name_wins_over_the_old_one(tiny_dataset, in_tmp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = _config(tiny_dataset, ssm_negatives=5, sampled_softmax_negatives=9)
    assert config["sampled_softmax_negatives"] == 9


def test_new_names_give_no_warning(tiny_dataset, in_tmp):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _config(tiny_dataset, loss_type="SampledSoftmax", sampled_softmax_negatives=5)
    assert not [w for w in seen if "still works" in str(w.message)]


def test_a_checkpoint_of_the_old_names_loads(tiny_dataset, in_tmp, tmp_path):
    """An earlier version pickled its Config class as recbole_hyper.config.HyperConfig, with ssm_* keys."""
    import recbole_hyper.config as config_package
    from recbole_hyper.compat import load_checkpoint
    from recbole_hyper.config.plugin_config import PluginConfig as Current

    config = _config(tiny_dataset)
    config.final_config_dict["ssm_negatives"] = 77
    del config.final_config_dict["sampled_softmax_negatives"]
    path = tmp_path / "old.pth"
    # Write it as the earlier version did: the class under its old module and name.
    module, qualname = Current.__module__, Current.__qualname__
    Current.__module__, Current.__qualname__ = "recbole_hyper.config", "HyperConfig"
    config_package.HyperConfig = Current
    try:
        torch.save({"config": config, "state_dict": {}}, path)
    finally:
        Current.__module__, Current.__qualname__ = module, qualname
        del config_package.HyperConfig

    with pytest.raises(AttributeError, match="HyperConfig"):
        torch.load(path, weights_only=False)  # what an unmapped load meets
    loaded = load_checkpoint(path)["config"]
    assert type(loaded) is Current
    assert loaded["sampled_softmax_negatives"] == 77 and "ssm_negatives" not in loaded.final_config_dict


def test_old_class_names_are_importable_with_a_warning():
    import recbole_hyper
    from recbole_hyper.models.base import MambaSequentialRecommender

    with pytest.warns(FutureWarning, match="MambaSequentialRecommender"):
        assert recbole_hyper.HyperSequentialRecommender is MambaSequentialRecommender
