"""RecBole's trainer, with checkpoints that load on torch >= 2.6 and model hooks.

:class:`PluginTrainer` is RecBole's ``Trainer`` with nine changes:

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
* inside a long epoch it logs progress every ``progress_interval`` seconds
  (batches done, seconds per batch, time left) and, once, how long an epoch
  takes (:mod:`recbole_hyper.training.progress`);
* the parts of a loss tuple are logged (and written to TensorBoard) under the
  names the model gives them (``loss_names``: ``main``, ``graph``,
  ``load_balance_0``, ...), not as ``train_loss1, train_loss2``;
* hooks (:meth:`PluginTrainerMixin.add_hook`): objects whose optional
  ``on_fit_start(trainer, train_data)``, ``on_epoch(trainer, record)`` (after
  each validation: epoch, valid score, training and validation seconds,
  training loss, elapsed seconds, and ``ends``: whether early stopping or the
  last epoch ends training there) and ``on_evaluated(trainer, eval_data,
  struct, result)`` (RecBole's collected data and the metrics of every
  evaluation) are called; ``on_epoch`` may raise :class:`StopTraining` to end
  training with the best model so far;
* parameters on a manifold (``geoopt.ManifoldParameter``) are optimised by
  geoopt's ``RiemannianAdam`` beside the configured optimiser
  (:mod:`recbole_hyper.training.optim`);
* distributed runs (:mod:`recbole_hyper.training.distributed`) wrap the model for CPUs
  (gloo) as well as GPUs, compute exact metrics from every rank's rankings,
  and let only global rank 0 write checkpoints;
* with ``save_last_state`` it writes the run's last state after every epoch
  beside the best checkpoint, and :meth:`PluginTrainerMixin.resume_last_state`
  continues a run from it (:mod:`recbole_hyper.training.resume`).

:func:`trainer_class` gives these changes to any RecBole trainer class.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_hyper.compat import load_checkpoint, save_safely, silence_known_warnings
from recbole_hyper.errors import describe_error
from recbole_hyper.training import distributed, resume
from recbole_hyper.training.optim import build_optimizer
from recbole_hyper.training.progress import EpochProgress

__all__ = ["PluginTrainerMixin", "PluginTrainer", "StopTraining", "trainer_class"]


class StopTraining(Exception):
    """Raised by an ``on_epoch`` hook: training ends, the best model so far is kept."""


class PluginTrainerMixin:
    def __init__(self, config, model):
        # RecBole's trainer wraps the model for one GPU per rank; the plugin's
        # wrapper works on CPUs (gloo) too.
        with distributed.as_one_process(config):
            super().__init__(config, model)
        if not config["single_spec"]:
            self.distributed_model = distributed.wrap_model(self.model, config)

    def _build_optimizer(self, **kwargs):
        """RecBole's optimiser; manifold parameters (geoopt) get RiemannianAdam beside it."""
        if "params" in kwargs:
            return super()._build_optimizer(**kwargs)
        return build_optimizer(
            self.model,
            lambda params: super(PluginTrainerMixin, self)._build_optimizer(params=params, **kwargs),
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
        self._fit_state = {"train_data": train_data, "valid_data": valid_data, "saved": saved}
        if getattr(self, "_resumed_finished", False):
            # The interrupted run had finished training: only its test remains.
            return self.best_valid_score, self.best_valid_result
        # Elapsed time counts the interrupted run's too.
        self._fit_start = time.perf_counter() - getattr(self, "_resumed_elapsed", 0.0)

        def after_validation(epoch_idx, valid_score):
            clock = self._epoch_clock
            now = time.perf_counter()
            record = {
                "epoch": epoch_idx,
                "valid_score": float(valid_score),
                "train_s": clock["train_s"],
                "eval_s": now - clock["end"],
                "train_loss": clock["loss"],
                "elapsed_s": now - self._fit_start,
                "ends": self._training_ends_after(epoch_idx),
            }
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)
            try:
                self._call_hooks("on_epoch", record)
            except StopTraining:
                self._save_last_state(epoch_idx, stopped=True)
                raise
            self._save_last_state(epoch_idx, stopped=record["ends"] == "early_stopping")

        try:
            return super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation)
        except StopTraining:
            return self.best_valid_score, self.best_valid_result

    def _training_ends_after(self, epoch_idx) -> str | None:
        """Why training ends after validated epoch ``epoch_idx`` unless a hook stops it first:
        ``"early_stopping"`` (RecBole has counted ``cur_step`` past ``stopping_step``),
        ``"last_epoch"`` (the last of ``epochs``), or ``None`` when it goes on."""
        if self.cur_step > self.stopping_step:
            return "early_stopping"
        if epoch_idx + 1 >= self.epochs:
            return "last_epoch"
        return None

    # ------------------------------------------------------------- last state
    def _validates_after(self, epoch_idx) -> bool:
        """Whether RecBole's ``fit`` validates after training epoch ``epoch_idx``."""
        valid = self._fit_state["valid_data"]
        return bool(self.eval_step > 0 and valid and (epoch_idx + 1) % self.eval_step == 0)

    def _save_last_state(self, epoch_idx: int, stopped: bool = False) -> None:
        """Write everything the next epoch depends on (see :mod:`recbole_hyper.training.resume`)."""
        if not (self._fit_state["saved"] and self.config["save_last_state"]):
            return
        if not distributed.is_main():
            return
        train_data = self._fit_state["train_data"]
        hooks = {
            type(h).__name__: h.state_dict() for h in getattr(self, "hooks", ()) if hasattr(h, "state_dict")
        }
        state = {
            **self._checkpoint_core(epoch_idx),
            "run": getattr(self, "run_inputs", None),
            "stopped": bool(stopped),  # early stopping or a hook ended training
            "best_valid_result": self.best_valid_result,
            "saved_model_file": self.saved_model_file,
            "elapsed_s": time.perf_counter() - self._fit_start,
            "rng": resume.capture_rng(getattr(train_data, "generator", None)),
            "hooks": hooks,
        }
        resume.write_last_state(state, resume.last_state_path(self.saved_model_file))

    def _checkpoint_core(self, epoch: int) -> dict:
        """What RecBole's checkpoint holds (config, epoch, step, best score, weights, optimizer);
        the best checkpoint and the last state both start from it."""
        return {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def resume_last_state(self, state, train_data) -> None:
        """Continue the run whose last state is ``state`` (:func:`recbole_hyper.training.resume.read_last_state`).

        Call before :meth:`fit`; the best model keeps being written to the
        interrupted run's checkpoint file: where the run wrote it or, when the
        folder was moved (or the path was relative to another working
        directory), the file of that name beside the last state.
        """
        best = state["saved_model_file"]
        if not Path(best).is_file() and state.get("read_from"):
            best = str(Path(state["read_from"]).with_name(Path(best).name))
        if state["best_valid_result"] is not None and not Path(best).is_file():
            raise resume.ResumeError(
                f"--resume: the run's best checkpoint {best} is missing; it must stay beside its last state."
            )
        self._restore(state, "--resume: the last state", resume.ResumeError)
        self.saved_model_file = best
        self.best_valid_result = state["best_valid_result"]
        self._resumed_elapsed = state.get("elapsed_s") or 0.0
        # Training had ended (stopped early, or all epochs done - unless `epochs` was raised).
        self._resumed_finished = bool(state["stopped"]) or self.start_epoch >= self.epochs
        for hook in getattr(self, "hooks", ()):
            saved_hook = state.get("hooks", {}).get(type(hook).__name__)
            if saved_hook is not None and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(saved_hook)
        resume.restore_rng(state["rng"], getattr(train_data, "generator", None))
        self.logger.info(
            set_color("Resumed", "green")
            + f" after epoch {state['epoch']}"
            + (" (training had ended; testing)" if self._resumed_finished else f", training from epoch {self.start_epoch}")
        )

    def _load_weights(self, checkpoint) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def _restore(self, checkpoint, source: str, error=ValueError) -> None:
        """Weights, optimizer state, next epoch and early-stopping counters from a checkpoint of this model."""
        saved_model = checkpoint["config"]["model"]
        if saved_model.lower() != self.config["model"].lower():
            raise error(f"{source} was trained with {saved_model}, not {self.config['model']}.")
        try:
            self._load_weights(checkpoint)
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise error(
                f"{source} does not fit this run's model: its weights or optimizer state have other shapes "
                f"({describe_error(exc)}). The model's settings or the data "
                f"changed since it was written; resume with the interrupted run's settings and data."
            ) from None
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]

    def _load_trained(self, checkpoint_file) -> None:
        # Distributed: only rank 0 wrote the file (other nodes may not see it); it sends the weights.
        if distributed.is_main():
            self._load_weights(load_checkpoint(checkpoint_file, map_location=self.device))
        distributed.broadcast_state(self.model)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint, written whole or not at all (:func:`~recbole_hyper.compat.save_safely`),
        with the fingerprint of the token maps the model was trained with (``serving_fingerprint``,
        set by the runner), which ties serving data to it."""
        if not distributed.is_main():  # RecBole checks local_rank, which is 0 on every node
            return
        if not isinstance(self, Trainer):  # RecBole's tree-model trainers save their own way
            return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {**self._checkpoint_core(epoch), "serving_fingerprint": getattr(self, "serving_fingerprint", None)}
        save_safely(state, saved_model_file, pickle_protocol=4)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _map_reduce(self, result, num_sample):
        # evaluate() gathered every rank's rankings before computing the metrics: they are global already.
        return result

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            self._load_trained(checkpoint_file)
            self.logger.info(
                "Loading model structure and parameters from {}".format(checkpoint_file)
            )
        reporting = any(hasattr(h, "on_evaluated") for h in getattr(self, "hooks", ()))
        if not (reporting or distributed.is_distributed()):
            return super().evaluate(eval_data, load_best_model=False, model_file=None, show_progress=show_progress)
        evaluator = self.evaluator.evaluate

        def evaluate_and_report(struct):
            struct = distributed.gather_struct(struct)  # all ranks' users: exact metrics on every rank
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
        self._restore(checkpoint, f"Checkpoint {resume_file}")
        self.saved_model_file = resume_file
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

    def _start_progress(self, train_data, epoch_idx, show_progress=False) -> None:
        if getattr(self, "_progress", None) is None:
            interval = self.config["progress_interval"]
            cpu_augmented = self.device.type == "cpu" and (self.config["train_mode"] or "augmented") == "augmented"
            log = self.logger.info if distributed.is_main() else (lambda line: None)
            self._progress = EpochProgress(
                60 if interval is None else interval, log, epochs=self.epochs, cpu_augmented=cpu_augmented
            )
            self.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: self._progress.step())
        self._progress.start_epoch(epoch_idx, len(train_data), bar_shown=bool(show_progress))

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        silence_known_warnings()
        self._schedule_learning_rate(train_data, epoch_idx)
        self._start_progress(train_data, epoch_idx, show_progress)
        t0 = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        end = time.perf_counter()
        total = float(sum(loss) if isinstance(loss, tuple) else loss)
        self._epoch_clock = {"train_s": end - t0, "end": end, "loss": total}
        report = getattr(self.model, "epoch_report", None)
        if report is not None:
            for line in report():
                self.logger.info(set_color(f"epoch {epoch_idx} ", "green") + line)
        if hasattr(self, "_fit_state") and not self._validates_after(epoch_idx):
            # No validation this epoch, so no after-validation callback: the state is complete now.
            self._save_last_state(epoch_idx)
        return loss


    # ---------------------------------------------------------------- logging
    def _loss_names(self, losses):
        """The model's names for the parts of a loss tuple (``loss_names``), when they match it."""
        names = getattr(self.model, "loss_names", None)
        if isinstance(losses, tuple) and names is not None and len(names) == len(losses):
            return names
        return None

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        """RecBole's epoch line, with each part of the loss under its name (e.g. ``main``, ``graph``)."""
        names = self._loss_names(losses)
        if names is None:
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        places = self.config["loss_decimal_place"] or 4
        parts = ", ".join(
            set_color(f"train_loss[{name}]", "blue") + f": {value:.{places}f}" for name, value in zip(names, losses)
        )
        head = set_color("epoch %d training", "green") % epoch_idx
        return f"{head} [{set_color('time', 'blue')}: {e_time - s_time:.2f}s, {parts}]"

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        names = self._loss_names(losses)
        if names is None:
            return super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        for name, value in zip(names, losses):
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)


class PluginTrainer(PluginTrainerMixin, Trainer):
    """RecBole's ``Trainer`` with the plugin's checkpoint loading and hooks."""


def trainer_class(base):
    """``base`` (a RecBole trainer class) with :class:`PluginTrainerMixin`."""
    if issubclass(base, PluginTrainerMixin):
        return base
    if base is Trainer:
        return PluginTrainer
    return type(f"Plugin{base.__name__}", (PluginTrainerMixin, base), {})
