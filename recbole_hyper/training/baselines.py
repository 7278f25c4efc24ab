"""Full-sequence training for RecBole's own causal sequential models.

RecBole trains SASRec and GRU4Rec on its augmented prefixes, with the loss at
the last position only.  Both are causal (SASRec masks attention to later
positions, GRU4Rec is a recurrence), so the output at position ``t`` depends
on items ``1..t`` alone and one pass over a window gives the prediction for
every prefix: the loss can be taken at every position, as the plugin's
models do with ``train_mode: full_sequence``.  Cross-entropy at every
position is the strongest published form of SASRec (Klenitskiy & Vasilev,
RecSys 2023).

:func:`full_sequence_class` gives a RecBole model class a ``calculate_loss``
that does this with the model's own parameters and its own ``forward``: the
only change during the loss is that ``forward`` keeps every position instead
of gathering the last one.  Prediction, evaluation, the state dict and
therefore checkpoints are RecBole's own.
"""

from __future__ import annotations

import torch

from recbole_hyper.data import target_field, uniform_negatives
from recbole_hyper.ops.cross_entropy import linear_cross_entropy
from recbole_hyper.training.distributed import global_mean_part

__all__ = ["CAUSAL_BASELINES", "full_sequence_class"]

# RecBole models whose ``forward`` ends by gathering the last position of a
# causal per-position output.
CAUSAL_BASELINES = ("SASRec", "GRU4Rec")


class FullSequenceLoss:
    """Mixin for a RecBole causal model: the loss at every position of a window."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.TARGET_SEQ = target_field(config)

    def all_positions(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """The model's own ``forward`` without its final gather: (batch, L, d)."""
        self.gather_indexes = lambda output, index: output  # shadows the method for this call
        try:
            return self.forward(item_seq, item_seq_len)
        finally:
            del self.gather_indexes

    def calculate_loss(self, interaction):
        if self.TARGET_SEQ not in interaction:
            return super().calculate_loss(interaction)
        targets = interaction[self.TARGET_SEQ]
        mask = targets > 0
        out = self.all_positions(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])[mask]
        targets = targets[mask]
        table = self.item_embedding.weight
        if self.loss_type == "BPR":
            negatives = uniform_negatives(targets, self.n_items)
            loss = self.loss_fct((out * table[targets]).sum(-1), (out * table[negatives]).sum(-1))
        else:
            loss = linear_cross_entropy(out, table, targets)
        return global_mean_part(loss, targets)


_CLASSES = {}


def full_sequence_class(model_class):
    """``model_class`` (one of :data:`CAUSAL_BASELINES`) with the per-position loss."""
    if model_class.__name__ not in CAUSAL_BASELINES:
        raise ValueError(
            f"train_mode 'full_sequence' needs a causal model; RecBole's {model_class.__name__} "
            f"is not one of {', '.join(CAUSAL_BASELINES)}. Use train_mode 'augmented'."
        )
    if model_class not in _CLASSES:
        _CLASSES[model_class] = type(model_class.__name__, (FullSequenceLoss, model_class), {
            "__module__": __name__,
            "__doc__": f"RecBole's {model_class.__name__} with the loss at every position (full_sequence).",
        })
    return _CLASSES[model_class]
