"""Training and evaluation entry points, mirroring ``recbole.quick_start``.

``run_recbole_hyper`` is RecBole's ``run_recbole`` pipeline (same datasets,
samplers, trainer and evaluator) with the plugin's configuration
(:class:`~recbole_hyper.config.PluginConfig`), early checks of the model name,
hyperparameters and dataset, and checkpoints that load on current torch.
It works for the plugin's models and for RecBole's own.
"""

from __future__ import annotations

import os
import sys
from logging import getLogger
from typing import Dict, List, Optional

import torch

from recbole_hyper.compat import load_checkpoint, tune_allocator

__all__ = ["run", "run_recbole_hyper", "load_data_and_model", "training_class"]


def run_recbole_hyper(
    model: str = None,
    dataset: str = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict] = None,
    saved: bool = True,
    queue=None,
    hooks=(),
    count_flops: bool = True,
    resume=None,
):
    """Train, early-stop on validation, and test one model on one dataset.

    ``resume``: a last-state file (``<checkpoint>.last.pth``, written after
    every epoch with ``save_last_state: True``) or the best checkpoint beside
    it. The run continues where that one stopped, with its configuration
    (model, dataset, config files, settings); ``config_dict`` and the command
    line may change settings on top (e.g. more ``epochs``), ``model`` and
    ``dataset`` may be left out. See :mod:`recbole_hyper.training.resume`.

    ``hooks``: trainer hooks (see :class:`recbole_hyper.training.trainer.PluginTrainerMixin`).
    ``count_flops``: log RecBole's FLOPs count of the model (informational;
    it runs the model once on a copy and does not change training).

    Returns a dict with ``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result`` and ``checkpoint`` (the file of the
    best model, when ``saved``).
    """
    from recbole.data import data_preparation
    from recbole.data.transform import construct_transform
    from recbole.utils import ModelType, get_environment, get_flops, get_trainer, init_logger, init_seed, set_color

    from recbole_hyper.config import PluginConfig
    from recbole_hyper.data import create_dataset
    from recbole_hyper.registry import get_model_class
    from recbole_hyper.serving import ServingData, serving_path
    from recbole_hyper.training import distributed
    from recbole_hyper.training.resume import read_last_state
    from recbole_hyper.training.trainer import trainer_class

    last_state = None
    if resume is not None:
        last_state = read_last_state(resume)
        model, dataset, config_file_list, config_dict = resumed_inputs(
            last_state, model, dataset, config_file_list, config_dict
        )
    model_class = get_model_class(model) if model is not None else None
    config = PluginConfig(
        model=model_class,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=config_dict,
    )
    run_inputs = {
        "model": config["model"],
        "dataset": config["dataset"],
        "config_file_list": list(config_file_list or []),
        # The command line's overrides are folded in: a resumed run has its own command line.
        "config_dict": {
            k: v
            for k, v in {**(config_dict or {}), **config.cmd_config_dict}.items()
            if k not in ("model", "dataset", "resume", "config_files", *LAUNCH_KEYS)
        },
    }
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    if config["tune_malloc"]:
        tune_allocator()

    dataset_obj = create_dataset(config)
    logger.info(dataset_obj)
    # Before build() reorders the rows; only the process that writes it builds it. Serving ranks
    # items after a history: sequential models only.
    servable = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    serving = ServingData.from_dataset(dataset_obj) if saved and servable and distributed.is_main() else None
    with distributed.as_one_process(config):
        train_data, valid_data, test_data = data_preparation(config, dataset_obj)
    distributed.shard_loaders(train_data, valid_data, test_data)

    init_seed(config["seed"] + distributed.rank(), config["reproducibility"])
    model_obj = training_class(config)(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)

    if count_flops:
        try:
            # On a copy of the model, under a forked random state, so that
            # counting cannot change what training draws.
            with torch.random.fork_rng(devices=[]):
                flops = get_flops(model_obj, dataset_obj, config["device"], logger, construct_transform(config))
            logger.info(set_color("FLOPs", "blue") + f": {flops}")
        except Exception as exc:  # FLOPs are informational only
            logger.warning(f"FLOPs could not be counted: {exc}")

    trainer = trainer_class(get_trainer(config["MODEL_TYPE"], config["model"]))(config, model_obj)
    trainer.run_inputs = run_inputs
    trainer.serving_fingerprint = serving.fingerprint() if serving is not None else None
    for hook in hooks:
        trainer.add_hook(hook)
    if last_state is not None:
        _log_changed_settings(logger, last_state["config"], config)
        trainer.resume_last_state(last_state, train_data)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    if serving is not None and os.path.isfile(trainer.saved_model_file):
        serving.add_training_edges(train_data.dataset, config)
        serving.save(serving_path(trainer.saved_model_file))

    logger.info(
        "The running environment of this training is as follows:\n"
        + get_environment(config).draw()
    )
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
    }
    main_process = distributed.is_main()
    if not config["single_spec"]:
        torch.distributed.destroy_process_group()
    if main_process and queue is not None:
        queue.put(result)
    return result


def resumed_inputs(last_state, model, dataset, config_file_list, config_dict):
    """The interrupted run's model, dataset, config files and settings, with ``config_dict`` on top."""
    from recbole_hyper.training.resume import ResumeError

    run = last_state.get("run")
    if not run:
        raise ResumeError("--resume: the last state does not say how its run was started.")
    for name, given in (("model", model), ("dataset", dataset)):
        if given is not None and str(given).lower() != str(run[name]).lower():
            raise ResumeError(
                f"--resume: the interrupted run trained {run['model']} on {run['dataset']}, "
                f"not {name} {given}; leave --{name} out or resume another file."
            )
    settings = without_launch_keys(run["config_dict"])
    settings.update(config_dict or {})
    return run["model"], run["dataset"], config_file_list or run["config_file_list"] or None, settings


# How a distributed run was launched (set per launch, never carried into a resumed run).
LAUNCH_KEYS = ("local_rank", "world_size", "ip", "port", "nproc", "offset", "group_offset")


def without_launch_keys(settings) -> dict:
    """``settings`` without the keys of a distributed launch (see :data:`LAUNCH_KEYS`)."""
    return {k: v for k, v in (settings or {}).items() if k not in LAUNCH_KEYS}


_VOLATILE = {"device", "single_spec", "gpu_id", "resume", "config_files", "state", "show_progress", *LAUNCH_KEYS}


def _log_changed_settings(logger, old, new) -> None:
    """Warn about settings that differ from the interrupted run's (e.g. an edited config file)."""
    changed = [
        f"{key}: {old[key]!r} -> {new[key]!r}"
        for key in sorted(set(old.final_config_dict) | set(new.final_config_dict))
        if key not in _VOLATILE and repr(old[key]) != repr(new[key])
    ]
    if changed:
        logger.warning("Resuming with settings that differ from the interrupted run's: " + "; ".join(changed))


def training_class(config):
    """The class to train: the configured one, or for RecBole's causal models in
    ``train_mode: full_sequence`` the same class with the loss at every position."""
    from recbole_hyper.registry import is_plugin_model
    from recbole_hyper.training.baselines import full_sequence_class

    if config["train_mode"] == "full_sequence" and not is_plugin_model(config["model"]):
        return full_sequence_class(config.model_class)
    return config.model_class


def _spawned(rank, model, dataset, config_file_list, config_dict, saved, queue, resume, threads):
    torch.set_num_threads(threads)
    config_dict = dict(config_dict or {}, local_rank=rank)
    run_recbole_hyper(model, dataset, config_file_list, config_dict, saved, queue, resume=resume)


def run(
    model: str,
    dataset: str,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
    resume=None,
):
    """Like ``recbole.quick_start.run``: one process, or ``nproc`` processes of a
    distributed run (gloo on CPUs, NCCL on GPUs; see :mod:`recbole_hyper.training.distributed`).

    On several nodes every node runs ``nproc`` processes with the same
    ``world_size`` (processes on all nodes), ``ip`` and ``port`` (of the node
    with rank 0) and its own ``group_offset`` (the rank of its first process).
    Returns the result of global rank 0 (``None`` on the other nodes).
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_hyper(model, dataset, config_file_list, config_dict, saved, resume=resume)
    from recbole_hyper.config import PluginConfig
    from recbole_hyper.registry import get_model_class
    from recbole_hyper.training import distributed
    from recbole_hyper.training.resume import read_last_state

    world = distributed.check_launch(nproc, world_size, group_offset)
    if resume is not None:
        model, dataset, config_file_list, config_dict = resumed_inputs(
            read_last_state(resume), model, dataset, config_file_list, config_dict
        )
    # Settings, model and dataset are checked here, once, before any process starts.
    config = PluginConfig(get_model_class(model), dataset, config_file_list, without_launch_keys(config_dict))
    backend = distributed.resolve_backend(config["ddp_backend"], nproc)
    config_dict = dict(config_dict or {})
    config_dict.update(world_size=world, ip=ip, port=str(port), nproc=nproc, offset=group_offset)
    if backend == "nccl":
        config_dict.setdefault("gpu_id", ",".join(str(i) for i in range(nproc)))
    threads = distributed.default_threads(nproc) if backend == "gloo" else torch.get_num_threads()
    # RecBole's processes would race to create the same folders (log/<model>, the checkpoint folder).
    for folder in (os.path.join("log", config["model"]), config["checkpoint_dir"]):
        os.makedirs(folder, exist_ok=True)
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(
        _spawned,
        args=(model, dataset, config_file_list, config_dict, saved, queue, resume, threads),
        nprocs=nproc,
        join=True,
    )
    return None if queue.empty() else queue.get()


def load_data_and_model(model_file):
    """Load the data splits and a trained model from a checkpoint.

    The same as ``recbole.quick_start.load_data_and_model``, for checkpoints
    of any model, on torch versions whose ``torch.load`` defaults to
    ``weights_only=True``.  Returns (config, model, dataset, train_data,
    valid_data, test_data).
    """
    from recbole.data import data_preparation
    from recbole.utils import init_logger, init_seed

    from recbole_hyper.data import create_dataset
    from recbole_hyper.registry import get_model_class

    checkpoint = load_checkpoint(model_file)
    config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model_class(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
