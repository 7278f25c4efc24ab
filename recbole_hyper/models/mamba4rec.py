"""Mamba4Rec (Liu et al., 2024): selective state spaces for next-item prediction.

Method, as in the authors' released RecBole code:

1. Item embeddings, dropout, then LayerNorm; no positional embedding (the
   recurrence is order-aware by itself).
2. ``num_layers`` Mamba layers; each is a Mamba-1 block, dropout and LayerNorm
   (with a residual connection only when layers are stacked), followed by a
   position-wise feed-forward block.
3. The representation at the last item scores every item through the tied
   item-embedding table; cross-entropy over all items (``loss_type: CE``) or
   BPR with one sampled negative.
4. Every Linear/Embedding weight is drawn from N(0, 0.02) and every Linear
   bias is zero, which also overrides Mamba's delta initialisation; the
   conv, ``A_log`` and ``D`` keep Mamba's init.  ``mamba_native_init: True``
   keeps mamba-ssm's own initialisation for the whole Mamba block instead.
"""

from __future__ import annotations

import torch.nn as nn

from recbole_hyper.models.base import COMMON_PARAMS, MAMBA_PARAMS, HyperSequentialRecommender

__all__ = ["Mamba4Rec"]


class Mamba4Rec(HyperSequentialRecommender):
    hyper_parameters = {**COMMON_PARAMS, **MAMBA_PARAMS}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.num_layers = config["num_layers"]
        self.dropout_prob = config["dropout_prob"]

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.mamba_layers = self.build_layers(config)
        self.init_weights(config)

    def embed(self, item_seq, positions=None):
        """Input representation of the sequence, (batch, L, d); no position enters."""
        return self.LayerNorm(self.dropout(self.item_embedding(item_seq)))
