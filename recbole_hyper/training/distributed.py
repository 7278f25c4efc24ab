"""Distributed data-parallel training with ``torch.distributed``: gloo on CPUs, NCCL on GPUs.

RecBole's own distributed mode starts NCCL unconditionally, gives every
process a shuffled, padded share of each loader (``DistributedSampler``) and
averages the metrics of the shares.  The plugin keeps RecBole's pieces (its
``run`` arguments ``nproc``, ``world_size``, ``ip``, ``port``,
``group_offset``; its trainer, which wraps the model in
``DistributedDataParallel`` and all-reduces the gradients) and changes four
things:

* **backend**: ``ddp_backend: auto | gloo | nccl``; ``auto`` is NCCL when CUDA
  GPUs are visible and gloo otherwise.  gloo ranks train on the CPU, NCCL rank
  ``local_rank`` on GPU ``local_rank``;
* **the same global batches as one process**: the training order is the one a
  single process draws (RecBole's shuffle with the loader's seeded generator)
  and global batch b, ``train_batch_size`` rows, is split into one contiguous
  part per rank (:class:`GlobalBatchShards`).  The plugin's models weight each
  rank's mean loss by its share of the batch's targets
  (:func:`target_share`), so the all-reduced gradient is the gradient of the
  global batch's mean loss, as in one process (RecBole's baselines keep the
  mean of the ranks' means);
* **exact evaluation**: every rank ranks a contiguous, unpadded slice of the
  evaluation users (:class:`RowShard`); the ranks' top-k lists are gathered
  (:func:`gather_struct`) and every rank computes the metrics on all users,
  so they equal a single process's and early stopping agrees on every rank;
* **one writer**: only global rank 0 writes checkpoints, last states and the
  serving data; before the test the best weights are read by rank 0 and
  broadcast (:func:`broadcast_state`), so other nodes need no copy of the file.

Random numbers that are not the data order (dropout masks, sampled negatives,
MoE noise) come from each rank's own stream (RecBole seeds rank r with
``seed + r``): with them, a distributed run matches one process in
distribution, not bit for bit.  When the last global batch of an epoch has
fewer rows than there are ranks, a rank without a row repeats one of the
batch's rows.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, List

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from recbole_hyper.config.params import HyperParameterError

__all__ = [
    "BACKENDS",
    "resolve_backend",
    "check_launch",
    "init_rank",
    "is_distributed",
    "world_size",
    "rank",
    "is_main",
    "wrap_model",
    "as_one_process",
    "shard_loaders",
    "GlobalBatchShards",
    "RowShard",
    "target_share",
    "global_mean_part",
    "gather_struct",
    "broadcast_state",
    "default_threads",
]

BACKENDS = ("auto", "gloo", "nccl")


def resolve_backend(requested, nproc: int = 1) -> str:
    """The backend ``ddp_backend`` names: ``auto`` is nccl with enough visible GPUs, else gloo."""
    name = str(requested or "auto").lower()
    if name not in BACKENDS:
        raise HyperParameterError(f"ddp_backend = {requested!r}: must be one of {', '.join(BACKENDS)}.")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return "nccl" if gpus >= nproc else "gloo"
    if name == "nccl" and gpus < nproc:
        raise HyperParameterError(
            f"ddp_backend nccl runs one process per GPU: --nproc={nproc} needs {nproc} CUDA GPUs, "
            f"{gpus} are visible. Use --ddp_backend=gloo (or auto) to train on CPUs."
        )
    return name


def check_launch(nproc: int, world_size: int, group_offset: int) -> int:
    """Check the launch arguments of a distributed run; returns the world size."""
    world = nproc if world_size == -1 else world_size
    if nproc < 1:
        raise HyperParameterError(f"--nproc={nproc}: must be at least 1.")
    if world < nproc:
        raise HyperParameterError(f"--world_size={world_size}: must be at least --nproc={nproc} (processes on all nodes).")
    if group_offset < 0 or group_offset + nproc > world:
        raise HyperParameterError(
            f"--group_offset={group_offset}: this node's ranks {group_offset}..{group_offset + nproc - 1} "
            f"must lie within the world of {world} processes (0..{world - 1})."
        )
    return world


def init_rank(final: dict) -> None:
    """Join the process group as rank ``local_rank + offset`` and set the device.

    Called by :class:`recbole_hyper.config.PluginConfig` in place of RecBole's
    NCCL-only ``_init_device`` when the configuration has a ``local_rank``.
    """
    backend = resolve_backend(final.get("ddp_backend"), final.get("nproc") or 1)
    local_rank = int(final["local_rank"])
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=local_rank + int(final.get("offset") or 0),
            world_size=int(final["world_size"]),
            init_method=f"tcp://{final['ip']}:{final['port']}",
        )
    final["ddp_backend"] = backend
    if backend == "nccl":
        final["device"] = torch.device("cuda", local_rank)
        torch.cuda.set_device(local_rank)
    else:
        final["device"] = torch.device("cpu")
    final["single_spec"] = False
    if dist.get_rank() != 0:  # one log, one progress bar
        final["state"] = "error"
        final["show_progress"] = False
        final["verbose"] = False


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Global rank 0 (the only writer), or a single process."""
    return rank() == 0


def wrap_model(model: torch.nn.Module, config) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` (rank 0's weights are broadcast to all ranks)."""
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(config["device"])
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


@contextlib.contextmanager
def as_one_process(config):
    """RecBole code run inside sees a single-process configuration: its data
    loaders get no ``DistributedSampler`` (:func:`shard_loaders` then gives each
    rank its part) and its trainer no GPU-only model wrapper (:func:`wrap_model`)."""
    distributed = not config["single_spec"]
    config["single_spec"] = True
    try:
        yield
    finally:
        config["single_spec"] = not distributed


class GlobalBatchShards(Sampler):
    """This rank's part of every global batch of ``order``.

    ``order`` is the sampler one process would use (shuffled by the loader's
    generator, or sequential); global batch b holds rows b*batch .. (b+1)*batch
    - 1 of it and rank r takes the r-th of ``world`` contiguous parts, so the
    ranks' parts together are exactly the single process's batch.  Every rank
    yields the same number of batches.
    """

    def __init__(self, order: Sampler, batch: int, rank: int, world: int):
        self.order, self.batch, self.rank, self.world = order, int(batch), int(rank), int(world)

    def __iter__(self) -> Iterator[List[int]]:
        batch = []
        for index in self.order:
            batch.append(int(index))
            if len(batch) == self.batch:
                yield self._part(batch)
                batch = []
        if batch:
            yield self._part(batch)

    def _part(self, batch: List[int]) -> List[int]:
        n = len(batch)
        part = batch[self.rank * n // self.world : (self.rank + 1) * n // self.world]
        return part or [batch[self.rank % n]]  # fewer rows than ranks: repeat one

    def __len__(self) -> int:
        return (len(self.order) + self.batch - 1) // self.batch

    def set_epoch(self, epoch: int) -> None:
        """RecBole's trainer calls this on a distributed sampler; the order comes from the loader's generator."""


class RowShard(Sampler):
    """Rows ``[rank*n/world, (rank+1)*n/world)`` of an evaluation loader, in batches (no padding)."""

    def __init__(self, n: int, batch: int, rank: int, world: int):
        self.lo, self.hi, self.batch = rank * n // world, (rank + 1) * n // world, int(batch)

    def __iter__(self) -> Iterator[List[int]]:
        for start in range(self.lo, self.hi, self.batch):
            yield list(range(start, min(start + self.batch, self.hi)))

    def __len__(self) -> int:
        return (self.hi - self.lo + self.batch - 1) // self.batch


def _set_batches(loader, batches: Sampler) -> None:
    # torch's DataLoader refuses new samplers after construction; the loader is
    # not being iterated here, and only ``batch_sampler`` decides what it yields.
    object.__setattr__(loader, "batch_sampler", batches)
    object.__setattr__(loader, "sampler", batches)


def shard_loaders(train_data, *eval_data) -> None:
    """Give this rank its part of the loaders built under :func:`as_one_process`."""
    if not is_distributed():
        return
    r, w = rank(), world_size()
    _set_batches(train_data, GlobalBatchShards(train_data.sampler, train_data.step, r, w))
    for loader in eval_data:
        if loader is not None:
            _set_batches(loader, RowShard(len(loader.sampler), loader.step, r, w))


def target_share(n_local: int, device) -> float:
    """``world * n_local / n_global``: a rank's mean loss over its ``n_local``
    targets times this is its part of the global batch's mean (the gradients are
    averaged over ranks). 1 in a single process. ``device``: the rank's training
    device (CUDA under NCCL, the CPU under gloo)."""
    if not is_distributed():
        return 1.0
    total = torch.tensor([float(n_local)], device=device)
    dist.all_reduce(total)
    return dist.get_world_size() * float(n_local) / max(float(total.item()), 1.0)


def global_mean_part(loss: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A training loss that is the mean over ``targets`` (this rank's), scaled to
    this rank's part of the global batch's mean; unchanged in a single process."""
    share = target_share(targets.numel(), targets.device)
    return loss if share == 1.0 else loss * share


# What RecBole's collector gathers per evaluated row (everything else is the same on every rank).
_PER_ROW = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


def gather_struct(struct):
    """Every rank's evaluated rows, in rank order (= the loader's order), in ``struct``."""
    if not is_distributed():
        return struct
    local = {key: struct[key] for key in _PER_ROW if key in struct}
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    for key in _PER_ROW:
        pieces = [part[key] for part in parts if key in part]
        if pieces:
            struct.set(key, torch.cat(pieces, dim=0))
    return struct


def broadcast_state(model: torch.nn.Module) -> None:
    """Rank 0's parameters, buffers and ``other_parameter`` on every rank."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
    other = [model.other_parameter() if hasattr(model, "other_parameter") else None]
    dist.broadcast_object_list(other, src=0)
    if other[0] is not None:
        model.load_other_parameter(other[0])


def default_threads(nproc: int) -> int:
    """CPU threads per rank when the user set none: the cores shared by this node's ranks."""
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, (os.cpu_count() or 1) // nproc)
