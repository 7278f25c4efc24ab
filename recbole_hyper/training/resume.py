"""The last state of a run, written every epoch, from which ``--resume`` continues it.

RecBole saves only the best model, and resuming from it restarts the epoch
loop with fresh random states and a fresh data order (RecBole issues #1735,
#2126).  With ``save_last_state: True`` (the default) the trainer writes,
after every epoch, a second file beside the best checkpoint
(``<best>.last.pth``) holding everything the next epoch depends on:

* the model's weights and buffers (HyMoERec's and HM2Rec's MoE step counters
  are buffers), the optimisers' state (geoopt's RiemannianAdam included);
* the random states: torch's global generator, numpy's and Python's, CUDA's
  when present, and the training dataloader's own generator (the shuffle);
* the epoch, RecBole's early-stopping counter, the best validation score and
  result, the best checkpoint's file name, whether training has ended;
* the state of trainer hooks that have ``state_dict``/``load_state_dict``;
* how the run was started (model, dataset, config files, ``config_dict``
  with the command line's overrides folded in), so ``--resume=PATH`` alone
  rebuilds the same configuration.

The file is written to a temporary name and renamed, so a run killed while
writing leaves the previous epoch's state intact.  A resumed run continues
with identical random draws: killed and resumed, it ends with the weights
and test metrics of the uninterrupted run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from recbole_hyper.compat import load_checkpoint, save_safely

__all__ = ["ResumeError", "last_state_path", "capture_rng", "restore_rng", "write_last_state", "read_last_state"]

SUFFIX = ".last.pth"
KIND = "recbole_hyper.last_state"


class ResumeError(ValueError):
    """A run cannot be resumed from the given file; the message says why."""


def last_state_path(best_checkpoint) -> Path:
    """``saved/Model-date.pth`` -> ``saved/Model-date.last.pth``."""
    path = Path(best_checkpoint)
    stem = path.name[: -len(".pth")] if path.name.endswith(".pth") else path.name
    return path.with_name(stem + SUFFIX)


def capture_rng(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def restore_rng(state: Dict[str, Any], generator: Optional[torch.Generator] = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"])


def write_last_state(state: Dict[str, Any], path) -> None:
    """Write a last state, marked as one (never half-written: :func:`~recbole_hyper.compat.save_safely`)."""
    save_safely(dict(state, kind=KIND), path, pickle_protocol=4)


def read_last_state(path) -> Dict[str, Any]:
    """The last state at ``path``; a best-model checkpoint is mapped to its last state."""
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"--resume: no such file: {path}.")
    state = _load(path)
    if state.get("kind") == KIND:
        return dict(state, read_from=str(path.resolve()))
    sibling = last_state_path(path)
    if sibling.is_file():
        state = _load(sibling)
        if state.get("kind") == KIND:
            return dict(state, read_from=str(sibling.resolve()))
    raise ResumeError(
        f"--resume: {path} is not a last-state file (the run that wrote it saved only its best model). "
        f"Resume from the '*{SUFFIX}' file a run writes beside its best checkpoint "
        "(save_last_state: True, the default)."
    )


def _load(path: Path) -> Dict[str, Any]:
    try:
        state = load_checkpoint(path, map_location="cpu")
    except Exception as exc:  # not a torch file, truncated, ...
        raise ResumeError(f"--resume: {path} cannot be read as a checkpoint ({type(exc).__name__}: {exc}).") from None
    if not isinstance(state, dict):
        raise ResumeError(f"--resume: {path} is not a checkpoint written by training.")
    return state
