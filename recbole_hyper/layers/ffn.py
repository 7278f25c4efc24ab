"""The two-layer GELU MLP, and Mamba4Rec's position-wise feed-forward block built on it.

* :class:`GeluMLP`: ``W2 Dropout(GELU(W1 x))`` with ``W1: d -> inner`` and
  ``W2: inner -> d``; a mixture of experts' experts are GeluMLPs;
* :class:`FeedForward`: Mamba4Rec's (and SASRec's) block around that MLP,
  ``FFN(H) = LayerNorm(H + Dropout(GeluMLP(H)))``.

Parameter names (``w_1``, ``w_2``, ``LayerNorm``) match Mamba4Rec's released
code so its checkpoints load.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["GeluMLP", "FeedForward"]


class GeluMLP(nn.Module):
    """The two-layer GELU MLP ``W2 Dropout(GELU(W1 x))``: one expert of a mixture, or the body of :class:`FeedForward`."""

    def __init__(self, d_model: int, inner_size: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, inner_size)
        self.w_2 = nn.Linear(inner_size, d_model)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class FeedForward(GeluMLP):
    """Mamba4Rec's feed-forward block: the MLP with dropout, a residual connection and LayerNorm,
    ``LayerNorm(x + Dropout(MLP(x)))``; ``mask`` is accepted and unused (a mixture of experts reads it)."""

    def __init__(self, d_model: int, inner_size: int, dropout: float = 0.2, eps: float = 1e-12):
        super().__init__(d_model, inner_size, dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        return self.LayerNorm(x + self.dropout(super().forward(x)))
