"""Mamba4Rec's layer: a Mamba block wrapped with dropout, LayerNorm and an FFN.

* one layer in the model: ``H = LayerNorm(Dropout(Mamba(X)))`` (no residual);
* stacked layers: ``H = LayerNorm(Dropout(Mamba(X)) + X)`` (``residual``);
* then the position-wise feed-forward block.

The model builds both parts (see ``MambaSequentialRecommender.build_mixer``
and ``build_ffn``): HMamba, HM2Rec and HyMoERec swap the mixer or the
feed-forward block there.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["MambaLayer"]


class MambaLayer(nn.Module):
    """``mamba`` (any sequence mixer with Mamba's interface) and ``ffn``, built by the model."""

    def __init__(
        self, mamba: nn.Module, ffn: nn.Module, d_model: int, dropout: float, residual: bool, eps: float = 1e-12
    ):
        super().__init__()
        self.residual = residual
        self.mamba = mamba
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=eps)
        self.ffn = ffn

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor = None, output_at: torch.Tensor = None
    ) -> torch.Tensor:
        """(batch, L, d) -> (batch, L, d), or (batch, d) at ``output_at`` (batch,) time indices.

        Everything after the Mamba block is position-wise, so with
        ``output_at`` it runs on one position per row only, unless the
        feed-forward block needs every token in training (a mixture of
        experts whose balance term averages over all tokens); then the layer
        runs at every position and the feed-forward block reads ``output_at``.
        """
        all_tokens = (
            output_at is not None
            and self.training
            and getattr(self.ffn, "needs_every_token", False)
        )
        at = None if all_tokens else output_at
        h = self.dropout(self.mamba(x, at))
        if at is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, at]
            mask = None if mask is None else mask[rows, at]
        h = self.LayerNorm(h + x) if self.residual else self.LayerNorm(h)
        if all_tokens:
            return self.ffn(h, mask, output_at)
        return self.ffn(h, mask)

    def step(self, x: torch.Tensor, state: dict, positions: torch.Tensor):
        """One time step (inference): x (batch, d) -> (batch, d) and the Mamba block's new state;
        ``positions`` (batch,) are the items' positions in their sequences (RoPE-Mamba reads them)."""
        h, state = self.mamba.step(x, state, positions)
        h = self.dropout(h)
        h = self.LayerNorm(h + x) if self.residual else self.LayerNorm(h)
        return self.ffn(h), state
