"""Mamba4Rec's layer: a Mamba block wrapped with dropout, LayerNorm and an FFN.

* one layer in the model: ``H = LayerNorm(Dropout(Mamba(X)))`` (no residual);
* stacked layers: ``H = LayerNorm(Dropout(Mamba(X)) + X)`` (``residual``);
* then the position-wise feed-forward block, which models may swap (HyMoERec
  puts its hybrid mixture of experts there).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recbole_hyper.layers.ffn import FeedForward
from recbole_hyper.layers.mamba import Mamba

__all__ = ["MambaLayer"]


class MambaLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_conv: int,
        expand: int,
        dropout: float,
        num_layers: int,
        ffn: nn.Module = None,
        mamba: nn.Module = None,
        scan_backend: str = "auto",
        residual: bool = None,
    ):
        super().__init__()
        self.num_layers = num_layers
        # Mamba4Rec: no residual for a single layer; layers whose input width
        # differs from d_model (HMamba's first layer) cannot have one either.
        self.residual = num_layers > 1 if residual is None else residual
        self.mamba = mamba or Mamba(
            d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand,
            scan_backend=scan_backend,
        )
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = ffn if ffn is not None else FeedForward(d_model, d_model * 4, dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor = None, positions: torch.Tensor = None
    ) -> torch.Tensor:
        """(batch, L, d) -> (batch, L, d), or (batch, d) at ``positions``.

        Everything after the Mamba block is position-wise, so with
        ``positions`` it runs on one position per row only, unless the
        feed-forward block needs every token in training (a mixture of
        experts whose balance term averages over all tokens); then the layer
        runs at every position and the feed-forward block reads ``positions``.
        """
        all_tokens = (
            positions is not None
            and self.training
            and getattr(self.ffn, "needs_all_positions", False)
        )
        at = None if all_tokens else positions
        h = self.dropout(self.mamba(x, at))
        if at is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, at]
            mask = None if mask is None else mask[rows, at]
        h = self.LayerNorm(h + x) if self.residual else self.LayerNorm(h)
        if all_tokens:
            return self.ffn(h, mask, positions)
        return self.ffn(h, mask)

    def step(self, x: torch.Tensor, state: dict, positions: torch.Tensor):
        """One time step (inference): x (batch, d) -> (batch, d) and the Mamba block's new state."""
        h, state = self.mamba.step(x, state, positions)
        h = self.dropout(h)
        h = self.LayerNorm(h + x) if self.residual else self.LayerNorm(h)
        return self.ffn(h), state
