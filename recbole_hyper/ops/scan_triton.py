"""Selective scan as fused Triton kernels (the ``triton`` scan backend).

The same S6 recurrence as :mod:`recbole_hyper.ops.scan`::

    delta'[t] = softplus(delta[t] + delta_bias)     (bias and softplus optional)
    h[t] = exp(delta'[t] * A) * h[t-1] + delta'[t] * B[t] * u[t]
    y[t] = (C[t] . h[t] + D * u[t]) * silu(z[t])    (D and z optional)

on time-major tensors: u, delta, z (L, batch, ED); A (ED, N); B, C
(L, batch, groups, N).  Any strides are accepted, so the Mamba block's views
are read in place.

One program owns one batch row and a block of ``BLOCK_D`` channels of one
group, keeps its (BLOCK_D, N) state in registers and walks time.  The forward
kernel writes y (and the last state for streaming); when gradients are
needed it also keeps the state at every ``CHUNK``-th step, (L / CHUNK, batch,
ED, N), never the (L, batch, ED, N) tensor of all states.  The backward
kernel walks the chunks from the last: it recomputes a chunk's states from its
saved boundary into a small per-program scratch area, then runs the
gradient recurrence backwards through the chunk, accumulating the gradients
of A and D in registers and writing per-block partial sums for B and C
(summed over the blocks of a group afterwards, so results do not depend on
the order of atomic additions).

Inputs in float64 are computed in float64 (the tests compare against
:func:`recbole_hyper.ops.scan_ref.selective_scan_ref` this way); other
floating types in float32.

Triton is optional.  On a machine without a GPU the kernels run in Triton's
interpreter when ``TRITON_INTERPRET=1`` is set before this module is imported
(slow; used by the tests).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["selective_scan_triton", "INTERPRETED", "CHUNK", "BLOCK_D"]

#: Whether the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
#: Time steps between the states the forward pass keeps for the backward pass.
CHUNK = 16
#: Channels per program (at most; fewer when a group is narrower).
BLOCK_D = 32


@triton.jit
def _softplus(x):
    # torch.nn.functional.softplus with its threshold of 20.
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _step_inputs(
    u_ptr, dl_ptr, B_ptr, bias, t, b, d, g, n, dmask, nmask,
    s_ul, s_ub, s_ud, s_dl, s_db, s_dd, s_Bl, s_Bb, s_Bg, s_Bn,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    """Step t's u, delta before softplus, delta and B: read the same way wherever the
    backward pass recomputes what the forward pass computed."""
    u_t = tl.load(u_ptr + t * s_ul + b * s_ub + d * s_ud, mask=dmask, other=0.0)
    dt_in = tl.load(dl_ptr + t * s_dl + b * s_db + d * s_dd, mask=dmask, other=0.0)
    if HAS_BIAS:
        dt_in = dt_in + bias
    dt = dt_in
    if SOFTPLUS:
        dt = _softplus(dt_in)
    B_t = tl.load(B_ptr + t * s_Bl + b * s_Bb + g * s_Bg + n * s_Bn, mask=nmask, other=0.0)
    return u_t, dt_in, dt, B_t


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dl_ptr, z_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
    y_ptr, last_ptr, states_ptr,
    L, ED, Dg, N, n_dblocks,
    s_ul, s_ub, s_ud,
    s_dl, s_db, s_dd,
    s_zl, s_zb, s_zd,
    s_Bl, s_Bb, s_Bg, s_Bn,
    s_Cl, s_Cb, s_Cg, s_Cn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr, SAVE_LAST: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: batch * L * ED can pass 2**31
    g = tl.program_id(1) // n_dblocks
    j = tl.program_id(1) % n_dblocks
    dg = j * BLOCK_D + tl.arange(0, BLOCK_D)  # channel within the group
    d = g * Dg + dg
    n = tl.arange(0, BLOCK_N)
    dmask = dg < Dg
    nmask = n < N
    m2 = dmask[:, None] & nmask[None, :]

    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=m2, other=0.0)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dmask, other=0.0)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0)
    h = tl.zeros_like(A)
    n_chunks = tl.cdiv(L, CHUNK)
    for c in range(0, n_chunks):
        t0 = c * CHUNK
        t1 = tl.minimum(t0 + CHUNK, L)
        for t in range(t0, t1):
            u_t, _, dt, B_t = _step_inputs(
                u_ptr, dl_ptr, B_ptr, bias, t, b, d, g, n, dmask, nmask,
                s_ul, s_ub, s_ud, s_dl, s_db, s_dd, s_Bl, s_Bb, s_Bg, s_Bn, HAS_BIAS, SOFTPLUS,
            )
            C_t = tl.load(C_ptr + t * s_Cl + b * s_Cb + g * s_Cg + n * s_Cn, mask=nmask, other=0.0)
            h = tl.exp(dt[:, None] * A) * h + (dt * u_t)[:, None] * B_t[None, :]
            y_t = tl.sum(h * C_t[None, :], axis=1)
            if HAS_D:
                y_t = y_t + Dv * u_t
            if HAS_Z:
                z_t = tl.load(z_ptr + t * s_zl + b * s_zb + d * s_zd, mask=dmask, other=0.0)
                y_t = y_t * z_t * tl.sigmoid(z_t)
            tl.store(y_ptr + (t * tl.num_programs(0) + b) * ED + d, y_t, mask=dmask)
        if SAVE_STATES:
            # The state after chunk c is where the backward pass restarts chunk c + 1.
            if c + 1 < n_chunks:
                base = (c * tl.num_programs(0) + b) * ED
                tl.store(states_ptr + (base + d[:, None]) * N + n[None, :], h, mask=m2)
    if SAVE_LAST:
        tl.store(last_ptr + (b * ED + d[:, None]) * N + n[None, :], h, mask=m2)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, dl_ptr, z_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
    gy_ptr, states_ptr, scratch_ptr,
    gu_ptr, gdl_ptr, gz_ptr, gA_ptr, gD_ptr, gB_ptr, gC_ptr,
    L, ED, Dg, N, n_dblocks,
    s_ul, s_ub, s_ud,
    s_dl, s_db, s_dd,
    s_zl, s_zb, s_zd,
    s_Bl, s_Bb, s_Bg, s_Bn,
    s_Cl, s_Cb, s_Cg, s_Cn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: batch * L * ED can pass 2**31
    pd = tl.program_id(1)
    n_batch = tl.num_programs(0)
    n_progd = tl.num_programs(1)
    g = pd // n_dblocks
    j = pd % n_dblocks
    dg = j * BLOCK_D + tl.arange(0, BLOCK_D)
    d = g * Dg + dg
    n = tl.arange(0, BLOCK_N)
    dmask = dg < Dg
    nmask = n < N
    m2 = dmask[:, None] & nmask[None, :]
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + n[None, :]
    scratch = scratch_ptr + (b * n_progd + pd) * (CHUNK * BLOCK_D * BLOCK_N)

    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=m2, other=0.0)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dmask, other=0.0)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0)
    dh = tl.zeros_like(A)  # grad(h[t]) times exp(delta[t+1] A), carried backwards
    gA = tl.zeros_like(A)
    gD = tl.sum(tl.zeros_like(A), axis=1)
    n_chunks = tl.cdiv(L, CHUNK)
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK
        t1 = tl.minimum(t0 + CHUNK, L)
        # The state before the chunk (zeros before the first).
        h0 = tl.zeros_like(A)
        if c > 0:
            base = ((c - 1) * n_batch + b) * ED
            h0 = tl.load(states_ptr + (base + d[:, None]) * N + n[None, :], mask=m2, other=0.0)
        # Recompute the chunk's states into this program's scratch area.
        h = h0
        for t in range(t0, t1):
            u_t, _, dt, B_t = _step_inputs(
                u_ptr, dl_ptr, B_ptr, bias, t, b, d, g, n, dmask, nmask,
                s_ul, s_ub, s_ud, s_dl, s_db, s_dd, s_Bl, s_Bb, s_Bg, s_Bn, HAS_BIAS, SOFTPLUS,
            )
            h = tl.exp(dt[:, None] * A) * h + (dt * u_t)[:, None] * B_t[None, :]
            tl.store(scratch + (t - t0) * (BLOCK_D * BLOCK_N) + tile, h)
        # The gradient recurrence, backwards through the chunk.
        for i in range(0, t1 - t0):
            t = t1 - 1 - i
            s = t - t0
            u_t, dt_in, dt, B_t = _step_inputs(
                u_ptr, dl_ptr, B_ptr, bias, t, b, d, g, n, dmask, nmask,
                s_ul, s_ub, s_ud, s_dl, s_db, s_dd, s_Bl, s_Bb, s_Bg, s_Bn, HAS_BIAS, SOFTPLUS,
            )
            C_t = tl.load(C_ptr + t * s_Cl + b * s_Cb + g * s_Cg + n * s_Cn, mask=nmask, other=0.0)
            h_t = tl.load(scratch + s * (BLOCK_D * BLOCK_N) + tile)
            h_prev = h0
            if s > 0:
                h_prev = tl.load(scratch + (s - 1) * (BLOCK_D * BLOCK_N) + tile)
            row = (t * n_batch + b) * ED + d
            gy = tl.load(gy_ptr + row, mask=dmask, other=0.0)
            if HAS_Z:
                z_t = tl.load(z_ptr + t * s_zl + b * s_zb + d * s_zd, mask=dmask, other=0.0)
                y_t = tl.sum(h_t * C_t[None, :], axis=1)
                if HAS_D:
                    y_t = y_t + Dv * u_t
                sz = tl.sigmoid(z_t)
                tl.store(gz_ptr + row, gy * y_t * sz * (1.0 + z_t * (1.0 - sz)), mask=dmask)
                gy = gy * z_t * sz
            if HAS_D:
                gD = gD + gy * u_t
            # y[t] = C[t] . h[t]: the gradients of C[t] and h[t].
            part = ((t * n_batch + b) * n_progd + pd) * N + n
            tl.store(gC_ptr + part, tl.sum(gy[:, None] * h_t, axis=0), mask=nmask)
            dh = dh + gy[:, None] * C_t[None, :]
            # h[t] = exp(delta A) h[t-1] + delta B[t] u[t].
            du = dt * u_t
            tl.store(gB_ptr + part, tl.sum(dh * du[:, None], axis=0), mask=nmask)
            g_du = tl.sum(dh * B_t[None, :], axis=1)
            dA = tl.exp(dt[:, None] * A)
            q = dh * dA * h_prev
            gA = gA + q * dt[:, None]
            g_dt = tl.sum(q * A, axis=1) + g_du * u_t
            g_u = g_du * dt
            if HAS_D:
                g_u = g_u + gy * Dv
            if SOFTPLUS:
                g_dt = tl.where(dt_in <= 20.0, g_dt * tl.sigmoid(dt_in), g_dt)
            tl.store(gu_ptr + row, g_u, mask=dmask)
            tl.store(gdl_ptr + row, g_dt, mask=dmask)
            dh = dh * dA
    tl.store(gA_ptr + (b * ED + d[:, None]) * N + n[None, :], gA, mask=m2)
    if HAS_D:
        tl.store(gD_ptr + b * ED + d, gD, mask=dmask)


def _plan(ED: int, G: int, N: int):
    Dg = ED // G
    block_d = min(BLOCK_D, triton.next_power_of_2(Dg))
    block_n = max(2, triton.next_power_of_2(N))
    n_dblocks = triton.cdiv(Dg, block_d)
    return Dg, block_d, block_n, n_dblocks


def _strides(x, n):
    return tuple(x.stride()) if x is not None else (0,) * n


class _TritonScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, need_last, save):
        L, Bt, ED = u.shape
        G, N = B.shape[2], A.shape[1]
        Dg, block_d, block_n, n_dblocks = _plan(ED, G, N)
        y = u.new_empty(L, Bt, ED)
        n_chunks = triton.cdiv(L, CHUNK)
        states = u.new_empty(max(n_chunks - 1, 1) if save else 1, Bt, ED, N)
        last = u.new_empty(Bt, ED, N) if need_last else y
        dummy = y
        grid = (Bt, G * n_dblocks)
        _scan_fwd_kernel[grid](
            u, delta, z if z is not None else dummy, A, B, C,
            D if D is not None else dummy, delta_bias if delta_bias is not None else dummy,
            y, last, states,
            L, ED, Dg, N, n_dblocks,
            *u.stride(), *delta.stride(), *_strides(z, 3), *B.stride(), *C.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(softplus), SAVE_STATES=save, SAVE_LAST=bool(need_last),
            CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n,
        )
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
            ctx.softplus = bool(softplus)
        if need_last:
            ctx.mark_non_differentiable(last)
            return y, last
        return y

    @staticmethod
    def backward(ctx, gy, *unused):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        L, Bt, ED = u.shape
        G, N = B.shape[2], A.shape[1]
        Dg, block_d, block_n, n_dblocks = _plan(ED, G, N)
        n_progd = G * n_dblocks
        gy = gy.contiguous()
        g_u = torch.empty_like(u, memory_format=torch.contiguous_format)
        g_dl = torch.empty(L, Bt, ED, dtype=u.dtype, device=u.device)
        g_z = torch.empty(L, Bt, ED, dtype=u.dtype, device=u.device) if z is not None else g_dl
        g_A = u.new_empty(Bt, ED, N)
        g_D = u.new_empty(Bt, ED) if D is not None else g_dl
        g_Bp = u.new_zeros(L, Bt, n_progd, N)
        g_Cp = u.new_zeros(L, Bt, n_progd, N)
        scratch = u.new_empty(Bt * n_progd * CHUNK * block_d * block_n)
        dummy = g_dl
        _scan_bwd_kernel[(Bt, n_progd)](
            u, delta, z if z is not None else dummy, A, B, C,
            D if D is not None else dummy, delta_bias if delta_bias is not None else dummy,
            gy, states, scratch,
            g_u, g_dl, g_z, g_A, g_D, g_Bp, g_Cp,
            L, ED, Dg, N, n_dblocks,
            *u.stride(), *delta.stride(), *_strides(z, 3), *B.stride(), *C.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.softplus,
            CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n,
        )
        # Sum the per-block partials of B and C over each group's blocks.
        g_B = g_Bp.reshape(L, Bt, G, n_dblocks, N).sum(3)
        g_C = g_Cp.reshape(L, Bt, G, n_dblocks, N).sum(3)
        return (
            g_u,
            g_dl,
            g_A.sum(0),
            g_B,
            g_C,
            g_D.sum(0) if D is not None else None,
            g_z if z is not None else None,
            g_dl.sum((0, 1)) if delta_bias is not None else None,
            None,
            None,
            None,
        )


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """The selective scan with the Triton kernels, time-major.

    Shapes: u, delta, z (L, batch, ED); A (ED, N); B, C (L, batch, N) or
    (L, batch, groups, N); D, delta_bias (ED,).  Returns y (L, batch, ED) in
    u's dtype and, with ``return_last_state``, the state after the last step,
    (batch, ED, N).  Differentiable in every tensor input.
    """
    out_dtype = u.dtype
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    if B.dim() == 3:
        B = B.unsqueeze(2)
    if C.dim() == 3:
        C = C.unsqueeze(2)
    if B.shape[2] != C.shape[2]:
        raise ValueError("B and C must have the same number of groups.")
    if u.shape[2] % B.shape[2]:
        raise ValueError(f"{B.shape[2]} groups do not divide ED={u.shape[2]}.")

    def cast(x):
        return None if x is None else x.to(compute)

    inputs = (
        cast(u), cast(delta), cast(A).contiguous(), cast(B), cast(C),
        None if D is None else cast(D).contiguous(), cast(z),
        None if delta_bias is None else cast(delta_bias).contiguous(),
    )
    # Inside Function.forward grad mode is off: decide here whether to keep states.
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)
    res = _TritonScanFn.apply(*inputs, delta_softplus, return_last_state, save)
    if return_last_state:
        y, last = res
        return y.to(out_dtype), last
    return res.to(out_dtype)
