"""Progress lines inside a training epoch."""

from recbole_hyper.training.progress import EpochProgress, format_duration
from tests.helpers import tiny


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _run(per_batch_s, total, interval=60, bar_shown=False, **kwargs):
    clock, lines = Clock(), []
    progress = EpochProgress(interval, lines.append, clock=clock, **kwargs)
    progress.start_epoch(3, total, bar_shown=bar_shown)
    for _ in range(total):
        clock.now += per_batch_s
        progress.step()
    return lines


def test_lines_every_interval_with_pace_and_time_left():
    lines = _run(1.0, 1000, epochs=300, cpu_augmented=True)
    # One line per 60 s of a 1,000 s epoch (none at the last batch), plus the one-off estimate.
    assert len(lines) == 16 + 1
    assert lines[0] == "epoch 3: 60/1,000 batches (6%), 1.00 s per batch, about 16 min left in this epoch"
    assert lines[1].startswith("at this pace an epoch takes about 17 min (at most 300 epochs")
    assert "train_mode=full_sequence" in lines[1]  # 1,000 s > 15 min on a CPU in augmented mode
    assert lines[-1].startswith("epoch 3: 960/1,000 batches (96%)") and lines[-1].endswith("about 40 s left in this epoch")


def test_with_a_progress_bar_only_the_estimate_is_logged():
    lines = _run(1.0, 1000, epochs=1, cpu_augmented=True, bar_shown=True)
    assert len(lines) == 1 and lines[0].startswith("at this pace an epoch takes about 17 min (at most 1 epoch;")


def test_no_hint_for_short_epochs_or_full_sequence_and_no_lines_when_off():
    assert "full_sequence" not in " ".join(_run(0.5, 1000, cpu_augmented=True))  # 500 s epochs
    assert "full_sequence" not in " ".join(_run(2.0, 1000, cpu_augmented=False))
    assert _run(1.0, 1000, interval=0) == []
    assert _run(0.01, 100) == []  # a 1 s epoch: nothing to report


def test_format_duration():
    assert [format_duration(s) for s in (5, 89, 90, 3000, 5400, 12240)] == ["5 s", "89 s", "2 min", "50 min",
                                                                               "1.5 h", "3.4 h"]


def test_the_trainer_logs_progress_during_an_epoch(tiny_dataset, in_tmp, monkeypatch):
    from recbole_hyper.models.mamba4rec import Mamba4Rec
    from recbole_hyper.training.trainer import PluginTrainer

    config, _, train, _, _ = tiny("Mamba4Rec", tiny_dataset, train_batch_size=2, progress_interval=1e-9)
    trainer = PluginTrainer(config, Mamba4Rec(config, train._dataset))
    lines = []
    monkeypatch.setattr(trainer.logger, "info", lambda msg, *a, **k: lines.append(str(msg)))
    trainer._train_epoch(train, 0)
    progress = [line for line in lines if line.startswith("epoch 0: ")]
    # Every batch but the last reports (the interval is tiny).
    assert len(train) > 2 and len(progress) == len(train) - 1
    assert progress[0].startswith(f"epoch 0: 1/{len(train)} batches")
