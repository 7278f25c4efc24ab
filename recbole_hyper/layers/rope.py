"""Rotary position embedding (RoPE) for Mamba.

RoPE rotates consecutive pairs of coordinates (x_{2k}, x_{2k+1}) by the angle
``p * theta_k`` at position p, with ``theta_k = base^(-2k/n)``.  Mamba has no
queries and keys, so two placements are offered (HM2Rec's ``rope_mode``):

* ``bc``: rotate the input-dependent B_t and C_t of the selective scan.  The
  scan's kernel between positions s <= t is
  ``C_t^T diag(prod_{r=s+1..t} exp(delta_r A)) B_s``; when A is tied within
  each rotated pair of state dimensions, the decay is a scalar on each pair
  and commutes with the rotation, so the rotated kernel is
  ``C_t^T R((s - t) theta) decay B_s``: positions enter only through their
  difference (exact relative position).  :class:`RoPEMamba` ties A by
  using the mean of the pair's two A values for both, which keeps
  mamba-ssm's parameter shapes.
* ``input``: rotate the token representation before ``in_proj`` (absolute
  positions; works unchanged with fused kernels).
"""

from __future__ import annotations

import torch

from recbole_hyper.layers.mamba import Mamba

__all__ = ["rotate_pairs", "RoPEMamba"]


def rotate_pairs(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs of the last dimension of x by ``positions * theta_k``.

    x: (..., n) with n even; positions broadcast against x's leading dims
    (e.g. (L, 1) for time-major (L, batch, n) tensors).
    """
    n = x.shape[-1]
    if n % 2:
        raise ValueError(f"RoPE rotates pairs: the last dimension must be even, got {n}.")
    theta = base ** (-torch.arange(0, n, 2, device=x.device, dtype=torch.float64) / n)
    angle = (positions.to(torch.float64).unsqueeze(-1) * theta).to(x.dtype)
    cos, sin = angle.cos(), angle.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return out.reshape(x.shape)


class RoPEMamba(Mamba):
    """Mamba with RoPE on B_t and C_t (``rope_mode: bc``) and A tied within pairs.

    ``position_offset`` shifts every position (for tests of the relative
    property; 0 in models).
    """

    def __init__(self, *args, rope_base: float = 10000.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.d_state % 2:
            raise ValueError(f"rope_mode 'bc' needs an even d_state, got {self.d_state}.")
        self.rope_base = rope_base
        self.position_offset = 0

    def state_matrix(self) -> torch.Tensor:
        A = super().state_matrix()
        paired = A.reshape(A.shape[0], -1, 2).mean(-1, keepdim=True)
        return paired.expand(-1, -1, 2).reshape(A.shape)

    def transform_bc(self, B: torch.Tensor, C: torch.Tensor, positions: torch.Tensor = None):
        if positions is None:
            positions = torch.arange(B.shape[0], device=B.device).view(-1, *([1] * (B.dim() - 2)))
        positions = positions + self.position_offset
        return rotate_pairs(B, positions, self.rope_base), rotate_pairs(C, positions, self.rope_base)
