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

from recbole_hyper.models.base import COMMON_PARAMS, MAMBA_PARAMS, MambaSequentialRecommender, trim_padding

__all__ = ["Mamba4Rec"]


class Mamba4Rec(MambaSequentialRecommender):
    """Mamba4Rec: selective state spaces for sequential recommendation.

    Paper: Liu, Lin, Wang, Liu, Caverlee, "Mamba4Rec: Towards Efficient Sequential
    Recommendation with Selective State Space Models", arXiv 2403.03900 (2024).
    Code: public, RecBole-based; this class follows it and reconstructs nothing.

    Method (see :meth:`forward`): item embeddings, dropout, LayerNorm; ``num_layers``
    Mamba layers (Mamba-1 block, dropout, LayerNorm, a residual connection only when
    layers are stacked, then a position-wise feed-forward block); the output at the
    last item scores every item by dot product with the item-embedding table.

    Keys that matter (``properties/model/Mamba4Rec.yaml``): ``hidden_size`` (64),
    ``num_layers`` (1), ``dropout_prob`` (0.2; 0.4 on the Amazon datasets),
    ``d_state`` (32), ``d_conv`` (4), ``expand`` (2), ``loss_type`` (CE),
    ``train_mode``, ``scan_backend``, ``mamba_native_init`` ([design], False).
    """

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

    def forward(self, item_seq, item_seq_len, target_mask=None):
        """The representation that scores the next item: (batch, d) after each sequence's
        last item, or (n, d) at the positions ``target_mask`` marks."""
        item_seq = trim_padding(item_seq, item_seq_len)
        x = self.embed(item_seq)  # 1. embeddings, dropout, LayerNorm
        h = self.run_layers(x, item_seq > 0, self.last_index(item_seq_len, target_mask))  # 2. Mamba layers
        return self.read_at(h, target_mask)  # 3. scored against item_embedding (score_all)
