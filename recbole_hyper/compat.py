"""Fixes for running RecBole 1.2.1 on the current PyTorch/NumPy/pandas/SciPy stack.

RecBole 1.2.1 is the latest release and predates several changes.  Each fix
below is targeted: it restores what RecBole needs and changes nothing else
(:func:`patch_stack` applies them when ``recbole_hyper`` is imported).

* **NumPy 2.**  RecBole's ``Config`` reads ``np.float_``, ``np.complex_`` and
  ``np.unicode_``, which NumPy 2 removed.  :func:`restore_numpy_aliases` gives
  exactly those three names their NumPy 1 meanings (``float64``, ``complex128``,
  ``str_``) when they are missing; nothing else in NumPy changes.
* **pandas 3.**  RecBole fills missing values with chained
  ``df[field].fillna(..., inplace=True)``, which pandas 3's copy-on-write turns
  into a no-op (missing values would stay, or crash later).
  :func:`fill_missing_values_under_pandas3` gives RecBole's ``Dataset`` (and so
  the plugin's dataset class, and RecBole's own in the stock pipeline) a
  ``_fill_nan`` that assigns the filled column back, and fills empty cells of
  sequence columns as RecBole's reader means to.  RecBole also takes each
  sequence's length with ``Series.agg(len)``, which pandas 3 answers with the
  length of the Series: while a dataset is built, ``agg(len)`` gives the
  elements' lengths again.  With pandas 2 nothing is changed.
* **SciPy.**  RecBole's graph models (LightGCN, NGCF, NCL, GCMC, SpectralCF,
  KGIN, MCCLK) build their adjacency with ``dok_matrix._update``, which SciPy
  removed.  :func:`restore_dok_update` adds that one method back (a dict
  update of the entries) when it is missing.
* **ray.**  ``recbole.quick_start`` imports ``ray.tune`` at import time, for
  one call: ``tune.report(...)`` at the end of ``objective_function``, a no-op
  outside a ray session.  ray 2.6.3 (RecBole's pin) has no wheels for Python
  3.12+ and needs ``pkg_resources`` (gone from setuptools 82).  When ray
  cannot be imported, :func:`quick_start_without_ray` lets RecBole's
  ``quick_start`` import with a stand-in for that one call (and says so once);
  ``ray`` itself stays absent for everyone else.  The plugin's own paths never
  import ``recbole.quick_start``.  hyperopt 0.2.5 (the search of ``recbole-hyper tune``)
  imports ``pkg_resources`` too, for ``resource_string`` alone: without it, that one function
  is given from ``importlib.resources`` while hyperopt's ATPE module is imported.
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
import importlib.util
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "check_stack",
    "patch_stack",
    "restore_numpy_aliases",
    "fill_missing_values_under_pandas3",
    "restore_dok_update",
    "quick_start_without_ray",
    "import_recbole_models",
    "load_checkpoint",
    "save_safely",
    "tune_allocator",
    "StackError",
]


class StackError(ImportError):
    """The installed packages cannot run RecBole 1.2.1."""


def check_stack() -> None:
    """Raise :class:`StackError` saying what to install when RecBole itself is missing."""
    if importlib.util.find_spec("recbole") is None:
        raise StackError(
            "recbole-hyper needs RecBole 1.2.1, which is not installed. On Python 3.12 and newer, "
            "RecBole's own dependency pin (ray<=2.6.3) has no wheels: install it without its "
            "dependencies, pip install --no-deps recbole==1.2.1 (recbole-hyper lists the packages "
            "RecBole really imports); on older Pythons, pip install recbole==1.2.1."
        )


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def patch_stack() -> None:
    """Apply every fix this module makes for the installed NumPy, pandas, SciPy and ray (idempotent)."""
    restore_numpy_aliases()
    fill_missing_values_under_pandas3()
    restore_dok_update()
    quick_start_without_ray()


#: The NumPy 1 aliases RecBole 1.2.1 reads, with their NumPy 1 meanings.
NUMPY1_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


def restore_numpy_aliases() -> list:
    """Set the aliases of :data:`NUMPY1_ALIASES` that this NumPy lacks; returns the names set."""
    import numpy

    restored = []
    for alias, target in NUMPY1_ALIASES.items():
        try:
            getattr(numpy, alias)
        except AttributeError:
            setattr(numpy, alias, getattr(numpy, target))
            restored.append(alias)
    return restored


_SEQUENCE_TYPES = (":token_seq", ":float_seq")


class _PandasFillingSequences:
    """pandas, as RecBole's dataset module sees it under pandas 3: ``read_csv`` fills the
    empty cells of sequence columns (``name:token_seq``, ``name:float_seq``) with ``""``,
    which RecBole's own chained ``fillna(..., inplace=True)`` no longer does."""

    def __init__(self, pandas_module):
        self._pandas = pandas_module

    def __getattr__(self, name):
        return getattr(self._pandas, name)

    def read_csv(self, *args, **kwargs):
        frame = self._pandas.read_csv(*args, **kwargs)
        columns = [c for c in frame.columns if str(c).endswith(_SEQUENCE_TYPES)]
        if columns:
            frame[columns] = frame[columns].fillna("")
        return frame


def _fill_nan(self):
    """RecBole's missing-value imputation, written so that pandas 3 applies it: a missing
    token becomes ``[PAD]`` (0), a missing float the mean of the column, a missing sequence
    an empty array."""
    import numpy as np
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x)


def _with_elementwise_len(build):
    """RecBole's dataset building (``Dataset._from_scratch``) with ``Series.agg(len)`` giving the
    length of every element, as pandas 2 did and RecBole's sequence fields rely on (pandas 3
    returns the length of the Series); every other ``agg`` is pandas' own, and the change lasts
    only while the dataset is built."""
    import functools

    import pandas

    @functools.wraps(build)
    def wrapper(self, *args, **kwargs):
        original = pandas.Series.agg

        def agg(series, func=None, *a, **kw):
            if func is len and not a and not kw:
                return series.map(len)
            return original(series, func, *a, **kw)

        pandas.Series.agg = agg
        try:
            return build(self, *args, **kwargs)
        finally:
            pandas.Series.agg = original

    wrapper._recbole_hyper = True
    return wrapper


def fill_missing_values_under_pandas3() -> bool:
    """Under pandas 3, make RecBole's ``Dataset`` fill missing values and handle sequence fields
    as it does under pandas 2 (see the module docstring).

    Returns whether anything was changed (False under pandas 2, where RecBole's code works).
    """
    import pandas

    if _major(pandas.__version__) < 3:
        return False
    import recbole.data.dataset.dataset as dataset_module

    if not isinstance(dataset_module.pd, _PandasFillingSequences):
        dataset_module.pd = _PandasFillingSequences(dataset_module.pd)
    dataset_module.Dataset._fill_nan = _fill_nan
    if not getattr(dataset_module.Dataset._from_scratch, "_recbole_hyper", False):
        dataset_module.Dataset._from_scratch = _with_elementwise_len(dataset_module.Dataset._from_scratch)
    return True


def _dok_update(self, entries) -> None:
    """``dok_matrix._update`` as SciPy < 1.12 had it: store the entries as they are."""
    self._dict.update(entries)


def restore_dok_update() -> bool:
    """Give ``scipy.sparse.dok_matrix`` back the ``_update`` RecBole's graph models call; returns
    whether it was missing."""
    from scipy.sparse import dok_matrix

    if hasattr(dok_matrix, "_update"):
        return False
    dok_matrix._update = _dok_update
    return True


class _RayStandIn:
    """What ``recbole.quick_start`` uses of ray when ray cannot be imported: ``tune.report``."""

    class tune:  # noqa: N801  (the attribute RecBole imports)
        @staticmethod
        def report(**metrics) -> None:
            """A no-op, as ray's own is outside a ray session."""


class _PkgResourcesStandIn:
    """What hyperopt 0.2.5 uses of ``pkg_resources`` (gone from setuptools 82): ``resource_string``."""

    @staticmethod
    def resource_string(package: str, resource: str) -> bytes:
        """The bytes of ``resource`` inside ``package``, as pkg_resources gave them."""
        from importlib import resources

        return resources.files(package).joinpath(resource).read_bytes()


_importable_cache = {}


def _importable(name: str) -> bool:
    """Whether ``import name`` works (tried once; an installed but broken package counts as absent)."""
    if name not in _importable_cache:
        present = sys.modules.get(name)
        if present is not None and present not in (_RayStandIn, _PkgResourcesStandIn):
            _importable_cache[name] = ""
        else:
            try:
                importlib.import_module(name)
                _importable_cache[name] = ""
            except Exception as exc:  # not installed, or ray 2.6.3 without pkg_resources
                _importable_cache[name] = f"{type(exc).__name__}: {exc}"
    return _importable_cache[name] == ""


# module -> (the package it imports, the stand-in, what to say when it is used); each stand-in is in
# sys.modules only while that one module is imported.
_STAND_INS = {
    "recbole.quick_start.quick_start": (
        "ray", {"ray": _RayStandIn, "ray.tune": _RayStandIn.tune},
        "recbole.quick_start runs without it (objective_function's ray.tune.report is skipped). "
        "RecBole's ray-based tools need ray: pip install 'ray<=2.6.3' 'setuptools<82' on Python 3.11 and older.",
    ),
    "hyperopt.atpe": ("pkg_resources", {"pkg_resources": _PkgResourcesStandIn}, None),
}


class _StandInFinder:
    """Imports each module of :data:`_STAND_INS` with its stand-in when the real package cannot be
    imported; the stand-in is removed from ``sys.modules`` right after."""

    def find_spec(self, name, path=None, target=None):
        if name not in _STAND_INS or _importable(_STAND_INS[name][0]):
            return None
        import importlib.machinery

        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = _WithStandIn(spec.loader, *_STAND_INS[name])
                return spec
        return importlib.machinery.PathFinder.find_spec(name, path, target)


class _WithStandIn:
    def __init__(self, loader, package, modules, message):
        self.loader, self.package, self.modules, self.message = loader, package, modules, message

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        absent = object()
        saved = {k: sys.modules.get(k, absent) for k in self.modules}
        sys.modules.update(self.modules)
        try:
            self.loader.exec_module(module)
        finally:
            for key, value in saved.items():
                if value is absent:
                    sys.modules.pop(key, None)
                else:
                    sys.modules[key] = value
        if self.message:
            warnings.warn(
                f"{self.package} cannot be imported ({_importable_cache[self.package]}); {self.message}",
                RuntimeWarning,
                stacklevel=2,
            )


def quick_start_without_ray() -> None:
    """Install :class:`_StandInFinder` (idempotent): RecBole's quick_start without ray, and
    hyperopt 0.2.5 (``recbole-hyper tune``) without setuptools' ``pkg_resources``."""
    if not any(isinstance(f, _StandInFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _StandInFinder())


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
    try:
        torch.save(obj, tmp, **kwargs)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def silence_known_warnings() -> None:
    """Silence the warnings RecBole 1.2.1 emits on every run.

    * torch's FutureWarning for ``torch.cuda.amp.GradScaler`` (one per epoch);
    * pandas 2's FutureWarning for RecBole's chained ``fillna(inplace=True)``
      (pandas 2 still fills in place; under pandas 3, where it would not,
      :func:`fill_missing_values_under_pandas3` fills the values instead);
    * setuptools' UserWarning that ``pkg_resources`` is deprecated, raised when
      ``recbole.quick_start`` imports ray 2.6.3 with a setuptools older than 82;
    * pandas 3's ChainedAssignmentError warning for those same ``fillna`` calls.
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
    # pandas 3: RecBole's chained fillna(inplace=True), whose effect fill_missing_values_under_pandas3 supplies.
    warnings.filterwarnings(
        "ignore", message=r"A value is being set on a copy of a DataFrame or Series through chained assignment",
        module=r"recbole\.",
    )


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
