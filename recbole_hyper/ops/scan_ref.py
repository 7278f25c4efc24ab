"""The selective scan written as its recurrence: the reference for tests and benchmarks.

``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t (+ D u_t)``,
gated by ``z * sigmoid(z)`` when z is given (the S6 equations of Mamba), one
time step after another with every decay materialised, ``(batch, d, L, n)``.
Nothing here is shared with :mod:`recbole_hyper.ops.scan`, whose blockwise
scan it checks; it is also the "textbook" baseline of ``benchmarks/bench_scan.py``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_ref"]


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    dtype: Optional[torch.dtype] = torch.float64,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(y, last state) of the selective scan, computed step by step.

    u, delta: (b, d, L); A: (d, n); B, C: (b, n, L), or (b, g, n, L) with the
    d channels split into g equal groups.  Computed in ``dtype`` (float64 by
    default; None keeps the inputs' dtype).  Returns y (b, d, L) and the
    state after the last step (b, d, n).
    """
    if dtype is not None:
        u, delta, A, B, C = (x.to(dtype) for x in (u, delta, A, B, C))
        D = None if D is None else D.to(dtype)
        z = None if z is None else z.to(dtype)
        delta_bias = None if delta_bias is None else delta_bias.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, L = u.shape
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    groups = B.shape[1]
    # Each channel's B and C: (b, d, n, L).
    B = B.repeat_interleave(d // groups, dim=1)
    C = C.repeat_interleave(d // groups, dim=1)
    decay = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    drive = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(L):
        h = decay[:, :, t] * h + drive[:, :, t]
        ys.append(torch.einsum("bdn,bdn->bd", h, C[:, :, :, t]))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D[None, :, None]
    if z is not None:
        y = y * z * torch.sigmoid(z)
    return y, h
