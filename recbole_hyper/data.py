"""Training data in two modes: RecBole's prefix augmentation or full sequences.

RecBole turns every training prefix into its own example, ``(i_1..i_{k-1}) ->
i_k``, with the loss at the last position: with ``MAX_ITEM_LIST_LENGTH`` L,
each interaction is processed about L/2 times per epoch.  Causal models
(all of the plugin's) see the same (prefix -> next item) pairs by running a
sequence once and taking the loss at every position.

``train_mode: full_sequence`` does that for the training split: each user's
training sequence is cut into windows of at most L inputs, the last ending at
the user's last training item and earlier ones right before, so that every
training interaction (except each user's first, which has no history) is a
target exactly once.  A window is one of RecBole's augmented rows (the one of
its last target) plus a ``target_item_id_list`` field: the inputs shifted by
one with the row's own target appended.  Validation and test rows, the split
and the full-ranking evaluation are RecBole's, unchanged.

In full_sequence mode ``train_batch_size`` counts windows; when it is not set
by the user, the plugin's default becomes ``train_batch_size // L`` so that a
batch holds about as many targets as an augmented batch.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils.enum_type import FeatureSource, FeatureType, ModelType

from recbole_hyper.atomic import check_not_filtered_away

__all__ = ["HyperSequentialDataset", "TRAIN_MODES", "target_field", "window_rows", "create_dataset"]

TRAIN_MODES = ("augmented", "full_sequence")


def target_field(config) -> str:
    """Name of the per-position target field, e.g. ``target_item_id_list``."""
    return "target_" + config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]


def window_rows(user_ids: np.ndarray, max_len: int) -> np.ndarray:
    """Indices of the augmented rows that end a window.

    ``user_ids`` lists the users of the training rows, grouped by user and in
    time order within each user (RecBole's order).  Row k of a user with m
    rows ends a window when (m - 1 - k) is a multiple of ``max_len``: the
    window is that row's prefix, which covers targets k - w + 1 .. k with
    w = min(max_len, k + 1).
    """
    n = len(user_ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    sizes = np.diff(np.r_[starts, n])
    position = np.arange(n) - np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    return np.flatnonzero((size - 1 - position) % max_len == 0)


class HyperSequentialDataset(SequentialDataset):
    """RecBole's ``SequentialDataset``; with ``train_mode: full_sequence`` the
    training split becomes one row per window (see the module docstring)."""

    def _reset_index(self):
        # RecBole's own message for an empty table ("Some feat is empty") names
        # neither the dataset nor the filter; say which filters removed everything.
        check_not_filtered_away(self)
        super()._reset_index()

    def build(self):
        datasets = super().build()
        if self.config["train_mode"] == "full_sequence":
            datasets[0] = self._full_sequence(datasets[0])
        return datasets

    def _full_sequence(self, train):
        inter = train.inter_feat
        rows = window_rows(inter[self.uid_field].numpy(), self.max_item_list_len)
        windows = inter[torch.as_tensor(rows, dtype=torch.long)]
        seq = windows[self.item_id_list_field]
        lengths = windows[self.item_list_length_field]
        targets = torch.zeros_like(seq)
        targets[:, :-1] = seq[:, 1:]
        batch = torch.arange(len(rows))
        targets[batch, lengths - 1] = windows[self.iid_field]
        targets[torch.arange(seq.shape[1])[None, :] >= lengths[:, None]] = 0
        field = target_field(self.config)
        windows.update(Interaction({field: targets}))
        full = train.copy(windows)
        full.set_field_property(field, FeatureType.TOKEN_SEQ, FeatureSource.INTERACTION, self.max_item_list_len)
        self.logger.info(
            f"full_sequence training: {len(rows)} windows of at most {self.max_item_list_len} "
            f"items cover the {len(inter)} training targets"
        )
        return full


def create_dataset(config):
    """RecBole's ``create_dataset``, with :class:`HyperSequentialDataset` for
    every sequential model that has no dataset class of its own (RecBole's
    baselines too: the runner's checks and ``train_mode`` apply to them)."""
    import recbole.data.dataset
    from recbole.data import create_dataset as recbole_create_dataset

    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL or hasattr(
        recbole.data.dataset, config["model"] + "Dataset"
    ):
        return recbole_create_dataset(config)
    return HyperSequentialDataset(config)
