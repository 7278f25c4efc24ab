"""The plugin trainer: its learning-rate schedule, mixed precision, and what its hooks are told."""

import math

import pytest

from tests.helpers import tiny


def rates_seen(schedule, tiny_dataset, epochs=3, **cfg):
    from recbole_hyper.models.mamba4rec import Mamba4Rec
    from recbole_hyper.training.trainer import PluginTrainer

    config, _, train, valid, _ = tiny("Mamba4Rec", tiny_dataset, train_batch_size=2, epochs=epochs,
                                      learning_rate=0.01, lr_schedule=schedule, **cfg)
    trainer = PluginTrainer(config, Mamba4Rec(config, train._dataset))
    seen = []
    trainer.optimizer.register_step_post_hook(lambda opt, a, k: seen.append(opt.param_groups[0]["lr"]))
    for epoch in range(epochs):
        trainer._train_epoch(train, epoch)
    return seen, len(train)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_follows_the_formula(schedule, tiny_dataset, in_tmp):
    seen, per_epoch = rates_seen(schedule, tiny_dataset, lr_warmup_steps=2, lr_min_ratio=0.1)
    total = 3 * per_epoch
    assert len(seen) == total
    for step, lr in enumerate(seen):
        if step < 2:
            expected = 0.01 * (step + 1) / 2
        else:
            progress = (step - 2) / (total - 2)
            shape = (1 + math.cos(math.pi * progress)) / 2 if schedule == "cosine" else 1 - progress
            expected = 0.01 * (0.1 + 0.9 * shape)
        assert lr == pytest.approx(expected, rel=1e-12), step


def test_constant_is_recbole_behaviour(tiny_dataset, in_tmp):
    seen, _ = rates_seen("constant", tiny_dataset)
    assert set(seen) == {0.01}


def test_bad_schedule_is_rejected(tiny_dataset, in_tmp):
    from recbole_hyper.config.params import HyperParameterError

    with pytest.raises(HyperParameterError, match="lr_schedule = 'exp'"):
        tiny("Mamba4Rec", tiny_dataset, lr_schedule="exp")


@pytest.mark.parametrize("model_name", ["Mamba4Rec", "HyMoERec", "HMamba", "HM2Rec"])
def test_mixed_precision_training_runs(model_name, tiny_dataset, in_tmp):
    """enable_amp: RecBole's trainer runs the loss under torch.autocast (bfloat16 on a CPU)."""
    import torch

    from recbole_hyper.registry import get_model_class
    from recbole_hyper.training.trainer import PluginTrainer

    config, _, train, _, _ = tiny(model_name, tiny_dataset, train_mode="full_sequence", enable_amp=True)
    torch.manual_seed(0)
    trainer = PluginTrainer(config, get_model_class(model_name)(config, train._dataset))
    assert trainer.enable_amp
    loss = trainer._train_epoch(train, 0)
    total = sum(loss) if isinstance(loss, tuple) else loss
    assert math.isfinite(float(total)) and float(total) > 0


@pytest.mark.parametrize(
    "scores, epochs, expected",
    [
        # RecBole's rule: a score below the best adds one to cur_step; stopping_step 1 ends at the second.
        ([0.5, 0.4, 0.3, 0.2, 0.1], 5, [None, None, "early_stopping"]),
        ([0.5, 0.4, 0.6, 0.5, 0.7], 5, [None, None, None, None, "last_epoch"]),
    ],
)
def test_hooks_hear_why_training_ends(scores, epochs, expected, tiny_dataset, in_tmp):
    from recbole_hyper.models.mamba4rec import Mamba4Rec
    from recbole_hyper.training.trainer import PluginTrainer

    config, _, train, valid, _ = tiny("Mamba4Rec", tiny_dataset, epochs=epochs, stopping_step=1)
    trainer = PluginTrainer(config, Mamba4Rec(config, train._dataset))
    given = iter(scores)

    def scripted_validation(valid_data, show_progress=False):
        score = next(given)
        return score, {"ndcg@10": score}

    trainer._valid_epoch = scripted_validation
    heard = []
    trainer.add_hook(type("Listener", (), {"on_epoch": lambda self, tr, record: heard.append(record["ends"])})())
    trainer.fit(train, valid, saved=False)
    # Training ended where the record said it would, and not before.
    assert heard == expected
