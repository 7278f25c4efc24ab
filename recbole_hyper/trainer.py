"""RecBole's trainer, with checkpoints that load on torch >= 2.6 and model hooks.

:class:`HyperTrainer` is RecBole's ``Trainer`` with six changes:

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
* hooks (:meth:`HyperTrainerMixin.add_hook`): objects whose optional
  ``on_fit_start(trainer, train_data)``, ``on_epoch(trainer, record)`` (after
  each validation: epoch, valid score, training and validation seconds,
  training loss, elapsed seconds) and ``on_evaluated(trainer, eval_data,
  struct, result)`` (RecBole's collected data and the metrics of every
  evaluation) are called; ``on_epoch`` may raise :class:`StopTraining` to end
  training with the best model so far;
* parameters on a manifold (``geoopt.ManifoldParameter``) are optimised by
  geoopt's ``RiemannianAdam`` beside the configured optimiser
  (:mod:`recbole_hyper.optim`).

:func:`trainer_class` gives these changes to any RecBole trainer class.
"""

from __future__ import annotations

import math
import time

from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_hyper.compat import load_checkpoint, silence_known_warnings
from recbole_hyper.optim import build_optimizer

__all__ = ["HyperTrainerMixin", "HyperTrainer", "StopTraining", "trainer_class"]


class StopTraining(Exception):
    """Raised by an ``on_epoch`` hook: training ends, the best model so far is kept."""


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

    # ------------------------------------------------------------------ hooks
    def add_hook(self, hook) -> None:
        """Call ``hook``'s ``on_fit_start``/``on_epoch``/``on_evaluated`` methods (those it has)."""
        self.hooks = [*getattr(self, "hooks", ()), hook]

    def _call_hooks(self, name: str, *args) -> None:
        for hook in getattr(self, "hooks", ()):
            method = getattr(hook, name, None)
            if method is not None:
                method(self, *args)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._call_hooks("on_fit_start", train_data)
        start = time.perf_counter()

        def after_validation(epoch_idx, valid_score):
            clock = self._epoch_clock
            now = time.perf_counter()
            record = {
                "epoch": epoch_idx,
                "valid_score": float(valid_score),
                "train_s": clock["train_s"],
                "eval_s": now - clock["end"],
                "train_loss": clock["loss"],
                "elapsed_s": now - start,
            }
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)
            self._call_hooks("on_epoch", record)

        try:
            return super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation)
        except StopTraining:
            return self.best_valid_score, self.best_valid_result

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
        if not any(hasattr(h, "on_evaluated") for h in getattr(self, "hooks", ())):
            return super().evaluate(eval_data, load_best_model=False, model_file=None, show_progress=show_progress)
        evaluator = self.evaluator.evaluate

        def evaluate_and_report(struct):
            result = evaluator(struct)
            self._call_hooks("on_evaluated", eval_data, struct, result)
            return result

        self.evaluator.evaluate = evaluate_and_report
        try:
            return super().evaluate(eval_data, load_best_model=False, model_file=None, show_progress=show_progress)
        finally:
            del self.evaluator.evaluate  # back to the class's method

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
        t0 = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        end = time.perf_counter()
        total = float(sum(loss) if isinstance(loss, tuple) else loss)
        self._epoch_clock = {"train_s": end - t0, "end": end, "loss": total}
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
