"""The Mamba-1 block (Gu & Dao, 2023) on top of :mod:`recbole_hyper.ops`.

Parameter names and shapes follow mamba-ssm's ``Mamba`` module (``in_proj``,
``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so a
state dict trained with mamba-ssm loads into this block and back.

Two execution paths compute the same function:

* ``torch`` and ``triton`` backends: the block runs time-major, (L, batch,
  channels), which is the layout of our PyTorch selective scan and the one our
  Triton kernels read fastest; the causal depthwise convolution is a sum of
  shifted products;
* ``cuda`` backend: mamba-ssm's ``selective_scan_fn`` and, when installed,
  causal-conv1d's ``causal_conv1d_fn``, in mamba-ssm's (batch, channels, L)
  layout.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_hyper.ops.scan import (
    resolve_backend,
    selective_scan,
    selective_scan_time_major,
)

__all__ = ["Mamba", "causal_conv1d_available"]

_causal_conv1d_fn = None
_causal_conv1d_checked = False


def _load_causal_conv1d():
    global _causal_conv1d_fn, _causal_conv1d_checked
    if not _causal_conv1d_checked:
        _causal_conv1d_checked = True
        try:
            from causal_conv1d import causal_conv1d_fn
        except Exception:
            causal_conv1d_fn = None
        _causal_conv1d_fn = causal_conv1d_fn
    return _causal_conv1d_fn


def causal_conv1d_available() -> bool:
    """Whether the causal-conv1d CUDA kernel can be imported."""
    return _load_causal_conv1d() is not None


def _causal_conv_time_major(x, weight, bias):
    """Depthwise causal convolution of x (L, batch, C) with weight (C, 1, K).

    Same function as ``nn.Conv1d(C, C, K, groups=C, padding=K-1)`` followed by
    keeping the first L outputs: y[t] = bias + sum_k w[k] * x[t - (K-1) + k].
    """
    L = x.shape[0]
    K = weight.shape[-1]
    w = weight[:, 0, :]
    xp = F.pad(x, (0, 0, 0, 0, K - 1, 0))
    out = xp[K - 1 :] * w[:, K - 1]
    if bias is not None:
        out = out + bias
    for k in range(K - 1):
        out = out + xp[k : k + L] * w[:, k]
    return out


class Mamba(nn.Module):
    """One Mamba-1 mixer: in_proj -> causal conv -> SiLU -> S6 scan -> gate -> out_proj.

    Args:
        d_model: output width (and input width unless ``d_input`` is given).
        d_state: N, the state size per channel.
        d_conv: kernel size of the causal depthwise convolution.
        expand: ED = expand * d_model inner channels.
        dt_rank: rank of the delta projection; ``"auto"`` = ceil(d_model / 16).
        dt_min, dt_max, dt_init_floor, dt_scale, dt_init: mamba-ssm's delta
            initialisation (see :meth:`reset_parameters`).
        d_input: width of the input if it differs from ``d_model`` (HMamba's
            Lorentz inputs have d_model + 1 coordinates).
        scan_backend: ``auto`` | ``cuda`` | ``triton`` | ``torch``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank="auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        d_input: Optional[int] = None,
        scan_backend: str = "auto",
    ):
        super().__init__()
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}.")
        self.d_model = d_model
        self.d_input = d_input or d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_min, self.dt_max = dt_min, dt_max
        self.dt_init, self.dt_scale, self.dt_init_floor = dt_init, dt_scale, dt_init_floor
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(self.d_input, self.d_inner * 2, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        # mamba-ssm marks these so that optimisers can skip weight decay.
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """mamba-ssm's initialisation of every parameter of the block.

        Linear/conv layers get PyTorch's defaults; ``dt_proj.weight`` is
        uniform (or constant) with scale dt_rank**-0.5 * dt_scale; its bias is
        the inverse softplus of dt ~ logUniform(dt_min, dt_max) (floored at
        dt_init_floor), so softplus(bias) starts in [dt_min, dt_max]; A is the
        S4D-real init A[:, n] = -(n + 1); D is one.
        """
        for lin in (self.in_proj, self.x_proj, self.out_proj, self.conv1d):
            lin.reset_parameters()
        std = self.dt_rank**-0.5 * self.dt_scale
        if self.dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(self.dt_max) - math.log(self.dt_min))
            + math.log(self.dt_min)
        ).clamp(min=self.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)

    def state_matrix(self) -> torch.Tensor:
        """A = -exp(A_log), (ED, N), in float32."""
        return -torch.exp(self.A_log.float())

    def transform_bc(self, B: torch.Tensor, C: torch.Tensor, positions: torch.Tensor = None):
        """Hook on the input-dependent B and C, time-major (L, batch, N).

        ``positions`` (L, batch) gives each step's position in its sequence;
        None means 0..L-1.  Identity here; RoPE-Mamba rotates them by position.
        """
        return B, C

    # ------------------------------------------------------------ recurrence
    def empty_state(self, batch: int, device=None, dtype=torch.float32) -> dict:
        """The state before the first item: the causal convolution's window of
        the last ``d_conv`` inputs, (batch, ED, d_conv), and the SSM state,
        (batch, ED, N); zeros, as the convolution pads with zeros."""
        return {
            "conv": torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
            "ssm": torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype),
        }

    def step(self, hidden: torch.Tensor, state: dict, positions: torch.Tensor):
        """One time step, the recurrent form of :meth:`forward`.

        hidden (batch, d_input) is each sequence's next input, ``positions``
        (batch,) its position; returns the output (batch, d_model) and the
        new state, in O(1) time and memory per step:
        ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t``, ``y_t = C_t h_t + D x_t``.
        """
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (batch, ED) each
        window = torch.cat([state["conv"][..., 1:], x.unsqueeze(-1)], dim=-1)
        x = (window * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        B, C = self.transform_bc(B.unsqueeze(0), C.unsqueeze(0), positions.unsqueeze(0))
        B, C = B[0], C[0]
        delta = F.softplus(self.dt_proj(dt))  # (batch, ED)
        A = self.state_matrix().to(x.dtype)
        h = torch.exp(delta.unsqueeze(-1) * A) * state["ssm"] + (delta * x).unsqueeze(-1) * B.unsqueeze(1)
        y = (h * C.unsqueeze(1)).sum(-1) + self.D.to(x.dtype) * x
        return self.out_proj(y * F.silu(z)), {"conv": window, "ssm": h}

    def forward(self, hidden_states: torch.Tensor, output_at: torch.Tensor = None) -> torch.Tensor:
        """(batch, L, d_input) -> (batch, L, d_model).

        With ``output_at`` (batch,), only the output at ``output_at[b]`` of
        each row is computed and returned, (batch, d_model): the recurrence
        still runs over the whole sequence, but the gate and ``out_proj``
        touch one position per row.
        """
        backend = resolve_backend(self.scan_backend, hidden_states.device)
        if backend == "cuda":
            y, z = self._scan_cuda(hidden_states)  # (batch, L, ED) each
            if output_at is not None:
                rows = torch.arange(y.shape[0], device=y.device)
                y, z = y[rows, output_at], z[rows, output_at]
            return self.out_proj(y * F.silu(z))
        y = self._scan_time_major(hidden_states, output_at, backend)
        if output_at is not None:
            return self.out_proj(y)  # (batch, d_model)
        return self.out_proj(y).transpose(0, 1)

    def _scan_time_major(self, hidden_states, output_at=None, backend="torch"):
        """Gated SSM output, time-major (L, batch, ED), or (batch, ED) at ``output_at``."""
        x = hidden_states.transpose(0, 1)  # (L, batch, d_input)
        xz = self.in_proj(x)
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(_causal_conv_time_major(x, self.conv1d.weight, self.conv1d.bias))
        x_dbl = self.x_proj(x)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        B, C = self.transform_bc(B, C)
        dt = F.linear(dt, self.dt_proj.weight)  # the bias is added inside the scan
        if output_at is not None:
            rows = torch.arange(z.shape[1], device=z.device)
            z = z[output_at, rows]
        return selective_scan_time_major(
            x,
            dt,
            self.state_matrix(),
            B,
            C,
            D=self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            output_at=output_at,
            backend=backend,
        )

    def _scan_cuda(self, hidden_states):
        """mamba-ssm kernels; returns (batch, L, ED) SSM output and gate input."""
        batch, L, _ = hidden_states.shape
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (batch, 2ED, L)
        x, z = xz.chunk(2, dim=1)
        conv = _load_causal_conv1d()
        if conv is not None:
            x = conv(
                x.contiguous(),
                self.conv1d.weight.squeeze(1),
                self.conv1d.bias,
                activation="silu",
            )
        else:
            x = F.silu(self.conv1d(x)[..., :L])
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        Bt, Ct = self.transform_bc(B.transpose(0, 1), C.transpose(0, 1))
        B = Bt.permute(1, 2, 0).contiguous()
        C = Ct.permute(1, 2, 0).contiguous()
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)
        y = selective_scan(
            x.contiguous(),
            dt.contiguous(),
            self.state_matrix(),
            B,
            C,
            D=self.D.float(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            backend="cuda",
        )
        return y.transpose(1, 2), z.transpose(1, 2)
