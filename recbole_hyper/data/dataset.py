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
by the user (or by ``full_sequence_defaults``), the plugin's default becomes
``train_batch_size // L`` so that a batch holds about as many targets as an
augmented batch.

The rows are built with array operations rather than RecBole's per-row loop
(same rows, same order).  Under the papers' split (leave-one-out by time)
full_sequence mode builds only the rows it uses, each user's validation and
test rows and the rows that end a window, instead of one row per interaction
(on ML-1M at L = 200: 8,617 windows instead of 981,491 prefixes).
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils.enum_type import FeatureSource, FeatureType, ModelType

from recbole_hyper.data.atomic_files import check_not_filtered_away

__all__ = [
    "PluginSequentialDataset",
    "TRAIN_MODES",
    "target_field",
    "window_rows",
    "create_dataset",
    "uniform_negatives",
    "training_edges",
]

TRAIN_MODES = ("augmented", "full_sequence")


def target_field(config) -> str:
    """Name of the per-position target field, e.g. ``target_item_id_list``."""
    return "target_" + config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]


def uniform_negatives(targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """One uniformly drawn negative item per window target (BPR in full_sequence
    mode), never the target itself nor padding."""
    negatives = torch.randint(1, n_items, targets.shape, device=targets.device)
    clash = negatives == targets
    negatives[clash] = (negatives[clash] % (n_items - 1)) + 1
    return negatives


def training_edges(dataset) -> np.ndarray:
    """The training graph: unique (user, item) pairs of a training split's rows, (E, 2).

    Every item of a row's history, its target and, in full_sequence mode, its
    per-position targets count: together they are exactly each user's training
    interactions, so validation and test targets never become edges.  Kept on
    the dataset after the first call (as RecBole-GNN builds graphs on its
    datasets).
    """
    cached = getattr(dataset, "_training_edges", None)
    if cached is not None:
        return cached
    config = dataset.config
    inter = dataset.inter_feat
    seq_fields = [config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]]
    if target_field(config) in inter:
        seq_fields.append(target_field(config))
    users = inter[config["USER_ID_FIELD"]].numpy()
    pieces_u, pieces_i = [users], [inter[config["ITEM_ID_FIELD"]].numpy()]
    for field in seq_fields:
        seq = inter[field].numpy()
        rows, cols = np.nonzero(seq)
        pieces_u.append(users[rows])
        pieces_i.append(seq[rows, cols])
    pairs = np.stack([np.concatenate(pieces_u), np.concatenate(pieces_i)], axis=1)
    pairs = np.unique(pairs[pairs[:, 1] > 0], axis=0)
    dataset._training_edges = pairs
    return pairs


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


class PluginSequentialDataset(SequentialDataset):
    """RecBole's ``SequentialDataset``; with ``train_mode: full_sequence`` the
    training split becomes one row per window (see the module docstring).

    The (history -> target) rows are built with array operations instead of
    RecBole's per-row Python loop, with the same result.  In full_sequence
    mode under the papers' split (leave-one-out by time) only the rows that
    are used are built: each user's validation and test rows and the rows
    that end a training window, instead of one row per interaction.
    """

    def _reset_index(self):
        # RecBole's own message for an empty table ("Some feat is empty") names
        # neither the dataset nor the filter; say which filters removed everything.
        check_not_filtered_away(self)
        super()._reset_index()

    def _windows_only(self) -> bool:
        """Whether the split keeps each user's last two rows for evaluation, so
        that the training rows needed by full_sequence mode are known upfront."""
        eval_args = self.config["eval_args"]
        return (
            self.config["train_mode"] == "full_sequence"
            and eval_args["split"] == {"LS": "valid_and_test"}
            and eval_args["order"] == "TO"
            and eval_args["group_by"] == "user"
        )

    def _vectorisable(self) -> bool:
        scalar = (FeatureType.TOKEN, FeatureType.FLOAT)
        numerical = set(self.config["numerical_features"] or [])
        return all(
            self.field2type[f] in scalar and f not in numerical for f in self.inter_feat if f != self.uid_field
        )

    def data_augmentation(self):
        """RecBole's prefix rows ``(i_1..i_{k-1}) -> i_k``, built without a Python loop."""
        if not self._vectorisable():
            self._windows_built = False
            return super().data_augmentation()
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        max_len = self.max_item_list_len
        uids = self.inter_feat[self.uid_field].numpy()
        n = len(uids)
        starts = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1]])
        sizes = np.diff(np.r_[starts, n])
        position = np.arange(n) - np.repeat(starts, sizes)
        keep = position >= 1  # every interaction with a history is a target
        self._windows_built = self._windows_only()
        if self._windows_built:
            from_end = np.repeat(sizes, sizes) - 1 - position  # 0: test, 1: valid
            keep &= (from_end < 2) | ((from_end - 2) % max_len == 0)
            # RecBole's split lists users in the order their first row appears
            # after sorting every row by time: keep that order (see _grouped_index).
            first = starts[sizes >= 2] + 1
            times = self.inter_feat[self.time_field].numpy()[first]
            order = np.argsort(times, kind="stable")
            self._user_rank = dict(zip(uids[first[order]].tolist(), range(len(order))))
        target_index = np.flatnonzero(keep)
        lengths = np.minimum(position[target_index], max_len)
        new_data = self.inter_feat[torch.as_tensor(target_index)]
        new_dict = {self.item_list_length_field: torch.as_tensor(lengths, dtype=torch.int64)}
        columns = np.arange(max_len)
        fields = [f for f in self.inter_feat if f != self.uid_field]
        lists = {f: torch.zeros((len(target_index), max_len), dtype=self.inter_feat[f].dtype) for f in fields}
        chunk = 1 << 16  # bounds the (rows, L) index arrays
        for lo in range(0, len(target_index), chunk):
            hi = min(lo + chunk, len(target_index))
            length = lengths[lo:hi, None]
            inside = columns[None, :] < length
            source = np.where(inside, (target_index[lo:hi, None] - length) + columns[None, :], 0)
            source = torch.as_tensor(source)
            inside = torch.as_tensor(inside)
            for f in fields:
                lists[f][lo:hi] = torch.where(inside, self.inter_feat[f][source], 0)
        new_dict.update({getattr(self, f"{f}_list_field"): lists[f] for f in fields})
        new_data.update(Interaction(new_dict))
        self.inter_feat = new_data

    def _grouped_index(self, group_by_list):
        rank = getattr(self, "_user_rank", None)
        if rank is None:
            return super()._grouped_index(group_by_list)
        groups = {}
        for i, key in enumerate(group_by_list.tolist()):
            groups.setdefault(key, []).append(i)
        return [groups[key] for key in sorted(groups, key=rank.__getitem__)]

    def build(self):
        datasets = super().build()
        if self.config["train_mode"] == "full_sequence":
            datasets[0] = self._full_sequence(datasets[0])
        return datasets

    def _full_sequence(self, train):
        inter = train.inter_feat
        if getattr(self, "_windows_built", False):
            rows = np.arange(len(inter))  # data_augmentation built only the window rows
        else:
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
            f"items cover the {int(lengths.sum())} training targets"
        )
        return full


def create_dataset(config):
    """RecBole's ``create_dataset``, with :class:`PluginSequentialDataset` for
    every sequential model that has no dataset class of its own (RecBole's
    baselines too: the runner's checks and ``train_mode`` apply to them)."""
    import recbole.data.dataset
    from recbole.data import create_dataset as recbole_create_dataset

    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL or hasattr(
        recbole.data.dataset, config["model"] + "Dataset"
    ):
        return recbole_create_dataset(config)
    return PluginSequentialDataset(config)
