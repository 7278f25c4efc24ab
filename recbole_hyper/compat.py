"""Fixes for running RecBole 1.2.1 on the current PyTorch/NumPy/pandas stack.

RecBole 1.2.1 is the latest release and predates several changes.  What this
module does, and why:

* **Version guard.**  RecBole's ``Config`` assigns ``np.float_`` and friends,
  which NumPy 2 removed, and its dataset code relies on pandas 2's
  ``fillna(..., inplace=True)``, which pandas 3's copy-on-write turns into a
  no-op.  recbole-hyper therefore requires ``numpy<2`` and ``pandas<3``;
  :func:`check_stack` says so clearly instead of failing deep inside RecBole.
* **Checkpoints.**  Since torch 2.6, ``torch.load`` defaults to
  ``weights_only=True``, which cannot read RecBole checkpoints (they pickle the
  ``Config`` object with protocol 4).  :func:`load_checkpoint` loads them with
  ``weights_only=False``; the plugin's trainer uses it for
  ``load_best_model=True`` and ``resume_checkpoint``.  Only load checkpoints
  you trust: unpickling can run code.  Checkpoints of earlier versions load
  too: classes pickled under a module or name that has since moved are found
  where they are now (:data:`MOVED_CLASSES`), and settings that were renamed
  are moved to their new names (:mod:`recbole_hyper.config.renamed`).
* **Anomaly detection.**  Importing ``recbole.model.sequential_recommender``
  imports RecBole's SINE model, which calls
  ``torch.autograd.set_detect_anomaly(True)`` at import time and slows every
  backward pass.  :func:`import_recbole_models` restores the previous setting.
* **Allocator.**  On Linux, glibc's malloc hands every buffer above 32 MB
  back to the kernel when it is freed, so a CPU training step that allocates
  and frees large activations page-faults millions of times (a third of the
  run time at batch size 2048).  :func:`tune_allocator` keeps freed memory
  for reuse; the runner calls it unless ``tune_malloc: False``.
* **Warnings.**  RecBole's trainer builds ``torch.cuda.amp.GradScaler`` every
  epoch, which torch deprecates with a FutureWarning; that one message is
  silenced.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "check_stack",
    "import_recbole_models",
    "load_checkpoint",
    "save_safely",
    "tune_allocator",
    "StackError",
]


class StackError(ImportError):
    """The installed packages cannot run RecBole 1.2.1."""


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def check_stack() -> None:
    """Raise :class:`StackError` with the fix when NumPy/pandas are too new."""
    import numpy
    import pandas

    problems = []
    if _major(numpy.__version__) >= 2:
        problems.append(
            f"numpy {numpy.__version__} is installed; RecBole 1.2.1 uses aliases "
            "removed in NumPy 2 (np.float_, np.bool8...)"
        )
    if _major(pandas.__version__) >= 3:
        problems.append(
            f"pandas {pandas.__version__} is installed; RecBole 1.2.1's in-place "
            "fillna calls silently do nothing under pandas 3"
        )
    if problems:
        raise StackError(
            "recbole-hyper cannot run RecBole 1.2.1 with this environment:\n  - "
            + "\n  - ".join(problems)
            + "\nInstall the supported versions: pip install 'numpy<2' 'pandas<3'"
        )


def import_recbole_models():
    """Import RecBole's sequential models without leaving anomaly detection on."""
    name = "recbole.model.sequential_recommender"
    already = name in sys.modules
    before = torch.is_anomaly_enabled()
    module = importlib.import_module(name)
    # SINE's module switches anomaly detection on when imported.  If it was
    # imported before us we cannot know the user's choice; the default (off)
    # is the sensible one, since anomaly mode makes training several times slower.
    torch.autograd.set_detect_anomaly(False if already else before)
    return module


def load_checkpoint(path, map_location: Any = None) -> dict:
    """Load a RecBole checkpoint written by the trainer.

    RecBole stores its ``Config`` object in the checkpoint, which torch's
    ``weights_only`` loader (the default since torch 2.6) refuses, so the file
    is unpickled in full.  Use it only on checkpoints you trust.
    """
    checkpoint = torch.load(str(path), map_location=map_location, weights_only=False, pickle_module=_MovedNames)
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    final = getattr(config, "final_config_dict", None)
    if isinstance(final, dict):
        from recbole_hyper.config.renamed import upgrade_settings

        upgrade_settings(final, warn=False)
    return checkpoint


#: (module, name) pickled by an earlier version -> where that class is now.
MOVED_CLASSES = {
    ("recbole_hyper.config", "HyperConfig"): ("recbole_hyper.config.plugin_config", "PluginConfig"),
}

#: modules of earlier versions -> their place now (for any class pickled from them).
MOVED_MODULES = {
    "recbole_hyper.config": "recbole_hyper.config.plugin_config",
    "recbole_hyper.data": "recbole_hyper.data.dataset",
    "recbole_hyper.params": "recbole_hyper.config.params",
    "recbole_hyper.atomic": "recbole_hyper.data.atomic_files",
    "recbole_hyper.trainer": "recbole_hyper.training.trainer",
    "recbole_hyper.optim": "recbole_hyper.training.optim",
    "recbole_hyper.resume": "recbole_hyper.training.resume",
    "recbole_hyper.distributed": "recbole_hyper.training.distributed",
    "recbole_hyper.baselines": "recbole_hyper.training.baselines",
    "recbole_hyper.tune": "recbole_hyper.training.tune",
    "recbole_hyper.serving": "recbole_hyper.serving.recommender",
    "recbole_hyper.viz": "recbole_hyper.serving.plot",
}


class _MovedNames:
    """A ``pickle`` module for ``torch.load`` whose unpickler finds moved classes."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in MOVED_CLASSES:
                module, name = MOVED_CLASSES[(module, name)]
            elif module in MOVED_MODULES:
                try:
                    return super().find_class(module, name)
                except AttributeError:
                    module = MOVED_MODULES[module]
            return super().find_class(module, name)

    load = staticmethod(pickle.load)


def save_safely(obj: Any, path, **kwargs) -> None:
    """``torch.save`` to ``<path>.tmp``, then rename: the file is complete or absent, never half-written."""
    tmp = Path(str(path) + ".tmp")
    torch.save(obj, tmp, **kwargs)
    tmp.replace(path)


def silence_known_warnings() -> None:
    """Silence two warnings RecBole 1.2.1 emits on every run.

    * torch's FutureWarning for ``torch.cuda.amp.GradScaler`` (one per epoch);
    * pandas 2's FutureWarning for RecBole's chained ``fillna(inplace=True)``
      (pandas 2 still fills in place; pandas 3, where it would not, is excluded
      by :func:`check_stack`);
    * setuptools' UserWarning that ``pkg_resources`` is deprecated, raised when
      ``recbole.quick_start`` imports ray 2.6.3 (setuptools < 82 is pinned so
      that ``pkg_resources`` still exists).
    """
    warnings.filterwarnings(
        "ignore",
        message=r".*torch\.cuda\.amp\.GradScaler.*is deprecated.*",
        category=FutureWarning,
    )
    warnings.filterwarnings(
        "ignore",
        message=r"A value is trying to be set on a copy of a DataFrame or Series",
        category=FutureWarning,
        module=r"recbole\.",
    )
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated as an API", category=UserWarning)


_allocator_tuned = False


def tune_allocator() -> bool:
    """Keep freed heap memory in the process instead of returning it to the OS.

    glibc only (Linux); elsewhere nothing happens.  Returns whether the
    settings were applied.  Memory use stays at its peak instead of
    shrinking between steps, which is what a training loop wants anyway.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok
