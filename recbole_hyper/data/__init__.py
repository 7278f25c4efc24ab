"""Data: RecBole's atomic files checked before loading, and the training rows.

* :mod:`~recbole_hyper.data.atomic_files`: checks of a dataset's atomic files
  (``.inter`` header, columns, filters) with one clear error each;
* :mod:`~recbole_hyper.data.dataset`: :class:`PluginSequentialDataset`, the
  training rows of both training modes (augmented prefixes, full-sequence
  windows), and the training split's user-item edges.
"""

from recbole_hyper.data.dataset import (
    TRAIN_MODES,
    PluginSequentialDataset,
    create_dataset,
    target_field,
    training_edges,
    uniform_negatives,
    window_rows,
)

__all__ = [
    "PluginSequentialDataset",
    "TRAIN_MODES",
    "create_dataset",
    "target_field",
    "training_edges",
    "uniform_negatives",
    "window_rows",
]
