"""Position-wise feed-forward block of Mamba4Rec (and SASRec).

``FFN(H) = LayerNorm(H + Dropout(W2 Dropout(GELU(W1 H))))`` with
``W1: d -> inner`` and ``W2: inner -> d``.  Parameter names (``w_1``,
``w_2``, ``LayerNorm``) match Mamba4Rec's released code so its checkpoints load.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["FeedForward", "ExpertFFN"]


class ExpertFFN(nn.Module):
    """The two-layer GELU MLP inside the block: ``W2 Dropout(GELU(W1 x))``."""

    def __init__(self, d_model: int, inner_size: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, inner_size)
        self.w_2 = nn.Linear(inner_size, d_model)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class FeedForward(ExpertFFN):
    """``LayerNorm(x + Dropout(MLP(x)))``; ``mask`` is accepted and unused."""

    def __init__(self, d_model: int, inner_size: int, dropout: float = 0.2, eps: float = 1e-12):
        super().__init__(d_model, inner_size, dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        return self.LayerNorm(x + self.dropout(super().forward(x)))
