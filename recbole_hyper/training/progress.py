"""Progress inside a training epoch: how far, how fast, how long is left.

RecBole logs one line per epoch.  When an epoch takes long (the papers'
augmented protocol on a CPU: about an hour per ML-1M epoch for HM2Rec), a
run says nothing for that long.  :class:`EpochProgress` counts optimizer
steps and, every ``progress_interval`` seconds, logs one line::

    epoch 0: 412/4,123 batches (10%), 0.87 s per batch, about 54 min left in this epoch

The first line (after ``progress_interval`` seconds) also says how long a
whole epoch takes at that pace, with the number of epochs the run may take;
when that is long for a run on a CPU in ``augmented`` mode, it names the
``full_sequence`` mode, which trains each sequence once per epoch.
With RecBole's progress bar on (``show_progress``) the bar shows the first
line's facts, so only the one-off estimate is logged.  ``progress_interval: 0``
switches the lines off.
"""

from __future__ import annotations

import time

__all__ = ["EpochProgress", "format_duration"]

#: An epoch longer than this on a CPU in augmented mode gets the full_sequence hint.
LONG_EPOCH_S = 15 * 60


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EpochProgress:
    """Counts a training epoch's batches and logs progress lines (see the module docstring).

    ``log`` is called with each line; ``clock`` returns seconds (for tests).
    """

    def __init__(self, interval_s: float, log, *, epochs: int = None, cpu_augmented: bool = False, clock=None):
        self.interval_s = float(interval_s or 0)
        self.log = log
        self.epochs = epochs
        self.cpu_augmented = cpu_augmented
        self.clock = clock or time.perf_counter
        self.epoch = None
        self.total = 0
        self.done = 0
        self.start = self.last = 0.0
        self.estimated = False
        self.bar_shown = False

    def start_epoch(self, epoch: int, total_batches: int, bar_shown: bool = False) -> None:
        """A new epoch of ``total_batches``; ``bar_shown``: a progress bar already shows the pace."""
        self.epoch, self.total, self.done = epoch, int(total_batches), 0
        self.bar_shown = bar_shown
        self.start = self.last = self.clock()

    def step(self) -> None:
        """One batch done (call from an optimizer step hook)."""
        if self.epoch is None or self.interval_s <= 0:
            return
        self.done += 1
        now = self.clock()
        if now - self.last < self.interval_s or self.done >= self.total:
            return
        self.last = now
        per_batch = (now - self.start) / self.done
        left = per_batch * (self.total - self.done)
        if not self.bar_shown:
            self.log(
                f"epoch {self.epoch}: {self.done:,}/{self.total:,} batches ({100 * self.done / self.total:.0f}%), "
                f"{per_batch:.2f} s per batch, about {format_duration(left)} left in this epoch"
            )
        if not self.estimated:
            self.estimated = True
            epoch_s = per_batch * self.total
            line = f"at this pace an epoch takes about {format_duration(epoch_s)}"
            if self.epochs:
                plural = "epoch" if self.epochs == 1 else "epochs"
                line += f" (at most {self.epochs} {plural}; early stopping may end the run sooner)"
            if self.cpu_augmented and epoch_s > LONG_EPOCH_S:
                line += (
                    ". On a CPU, train_mode=full_sequence trains each sequence once per epoch, with the loss "
                    "at every position, and reaches comparable accuracy in a fraction of the time "
                    "(docs/training.md)"
                )
            self.log(line)
