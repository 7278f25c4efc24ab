"""RecBole's trainer, with checkpoints that load on torch >= 2.6 and model hooks.

:class:`HyperTrainer` is RecBole's ``Trainer`` with five changes:

* an optional learning-rate schedule, per optimizer step: ``lr_schedule``
  ``constant`` (RecBole's behaviour, the default), ``cosine`` or ``linear``
  decay from ``learning_rate`` to ``lr_min_ratio * learning_rate`` over
  ``epochs`` epochs, after ``lr_warmup_steps`` steps of linear warm-up; the
  rate is a function of the step number alone, so a resumed run continues it;

* checkpoints written by training are read back with
  :func:`recbole_hyper.compat.load_checkpoint`, so ``evaluate(load_best_model=True)``
  and ``resume_checkpoint`` work with torch's ``weights_only`` default;
* after every training epoch it calls the model's ``epoch_report()`` if the
  model has one and logs the returned lines at INFO level (HyMoERec logs its
  expert load there);
* the per-epoch ``torch.cuda.amp.GradScaler`` deprecation warning is silenced;
* parameters on a manifold (``geoopt.ManifoldParameter``) are optimised by
  geoopt's ``RiemannianAdam`` beside the configured optimiser
  (:mod:`recbole_hyper.optim`).

:func:`trainer_class` gives these changes to any RecBole trainer class.
"""

from __future__ import annotations

import math

from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_hyper.compat import load_checkpoint, silence_known_warnings
from recbole_hyper.optim import build_optimizer

__all__ = ["HyperTrainerMixin", "HyperTrainer", "trainer_class"]


class HyperTrainerMixin:
    def _build_optimizer(self, **kwargs):
        """RecBole's optimiser; manifold parameters (geoopt) get RiemannianAdam beside it."""
        if "params" in kwargs:
            return super()._build_optimizer(**kwargs)
        return build_optimizer(
            self.model,
            lambda params: super(HyperTrainerMixin, self)._build_optimizer(params=params, **kwargs),
            kwargs.get("learning_rate", self.learning_rate),
        )

    def _load_trained(self, checkpoint_file):
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            self._load_trained(checkpoint_file)
            self.logger.info(
                "Loading model structure and parameters from {}".format(checkpoint_file)
            )
        return super().evaluate(
            eval_data, load_best_model=False, model_file=None, show_progress=show_progress
        )

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        saved_model = checkpoint["config"]["model"]
        if saved_model.lower() != self.config["model"].lower():
            raise ValueError(
                f"Checkpoint {resume_file} was trained with {saved_model}, "
                f"not {self.config['model']}."
            )
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(
            "Checkpoint loaded. Resume training from epoch {}".format(self.start_epoch)
        )

    def lr_factor(self, step: int, total: int) -> float:
        """Learning-rate multiplier at optimizer step ``step`` of ``total``."""
        warmup = int(self.config["lr_warmup_steps"] or 0)
        if step < warmup:
            return (step + 1) / warmup
        kind = self.config["lr_schedule"] or "constant"
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
        floor = float(self.config["lr_min_ratio"] or 0.0)
        return floor + (1.0 - floor) * shape

    def _schedule_learning_rate(self, train_data, epoch_idx) -> None:
        if (self.config["lr_schedule"] or "constant") == "constant" and not self.config["lr_warmup_steps"]:
            return
        steps = len(train_data)
        self._lr_step, self._lr_total = epoch_idx * steps, self.epochs * steps
        if getattr(self, "_lr_hook", None) is None:
            for group in self.optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])

            def before_step(optimizer, args, kwargs):
                factor = self.lr_factor(self._lr_step, self._lr_total)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                self._lr_step += 1

            self._lr_hook = self.optimizer.register_step_pre_hook(before_step)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        silence_known_warnings()
        self._schedule_learning_rate(train_data, epoch_idx)
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        report = getattr(self.model, "epoch_report", None)
        if report is not None:
            for line in report():
                self.logger.info(set_color(f"epoch {epoch_idx} ", "green") + line)
        return loss


class HyperTrainer(HyperTrainerMixin, Trainer):
    """RecBole's ``Trainer`` with the plugin's checkpoint loading and hooks."""


def trainer_class(base):
    """``base`` (a RecBole trainer class) with :class:`HyperTrainerMixin`."""
    if issubclass(base, HyperTrainerMixin):
        return base
    if base is Trainer:
        return HyperTrainer
    return type(f"Hyper{base.__name__}", (HyperTrainerMixin, base), {})
