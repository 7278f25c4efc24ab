"""Selective scan: the S6 recurrence of Mamba-1.

For every batch row ``b``, channel ``d`` and state dimension ``n``::

    h[t] = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[t, n] * u[t]
    y[t] = sum_n C[t, n] * h[t, n]  (+ D[d] * u[t])  (* silu(z[t]))

Three backends compute it:

* ``cuda``: mamba-ssm's fused kernels (``selective_scan_fn``), used when the
  package is importable and the tensors live on a CUDA device;
* ``triton``: our fused Triton kernels (:mod:`recbole_hyper.ops.scan_triton`),
  for CUDA tensors with nothing to compile beyond Triton's own just-in-time
  compilation (Triton comes with PyTorch's CUDA builds);
* ``torch``: our own implementation in plain PyTorch, which runs on CPU and
  CUDA.  It never materialises a (batch, ED, L, N) tensor: the sequence is
  processed in cache-sized blocks of (time steps x batch rows), the forward pass
  keeps only one state per block boundary, and the hand-written backward pass
  recomputes the states of a block when it needs them.  When only one output
  per sequence is needed, the unrolled (parallel) form of the recurrence is
  used instead: no loop over time and no stored states.

The public :func:`selective_scan` has the signature, shapes and semantics of
mamba-ssm's ``selective_scan_fn``.  :func:`selective_scan_time_major` is the
same computation on time-major tensors, the layout the torch backend works in;
the Mamba block calls it directly to avoid transposes.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "selective_scan",
    "selective_scan_time_major",
    "mamba_ssm_available",
    "triton_available",
    "resolve_backend",
    "SCAN_BACKENDS",
]

SCAN_BACKENDS = ("auto", "cuda", "triton", "torch")
_LOG2E = 1.4426950408889634
# Elements of one (time x batch x ED x N) work buffer of the torch backend.
# About 4 MB in float32: the handful of such buffers stays in the L3 cache.
_DEFAULT_BLOCK_ELEMS = 1 << 20
# Decays below 2**-100 are computed as 2**-100 (and contribute nothing
# measurable): exp2 of very negative inputs takes a slow path that makes it
# three times slower, and long-range decays in the parallel form reach them.
_MIN_LOG2_DECAY = -100.0

@functools.lru_cache(maxsize=None)
def _load_mamba_ssm():
    """mamba-ssm's ``selective_scan_fn``, or None; imported once."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken CUDA build
        return None
    return selective_scan_fn


def mamba_ssm_available() -> bool:
    """Whether mamba-ssm's selective-scan kernels can be imported."""
    return _load_mamba_ssm() is not None


@functools.lru_cache(maxsize=None)
def _load_triton():
    """Our Triton kernels' ``selective_scan_triton``, or None; imported once."""
    try:
        from recbole_hyper.ops.scan_triton import selective_scan_triton
    except Exception:  # ImportError, or a Triton that cannot start here
        return None
    return selective_scan_triton


def triton_available() -> bool:
    """Whether our Triton kernels can be imported (Triton is installed)."""
    return _load_triton() is not None


def _triton_interpreted() -> bool:
    if _load_triton() is None:
        return False
    from recbole_hyper.ops.scan_triton import INTERPRETED

    return INTERPRETED


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``auto``/``cuda``/``triton``/``torch`` into the backend that will run.

    ``auto`` picks, for CUDA tensors, mamba-ssm's kernels when mamba-ssm is
    installed, else our Triton kernels when Triton is installed, else our
    PyTorch scan; on CPU always the PyTorch scan.  ``cuda`` and ``triton``
    insist on their kernels and raise a clear error when they cannot be used
    (``triton`` runs on CPU tensors only in Triton's interpreter, with
    ``TRITON_INTERPRET=1``, slowly: for tests).
    """
    if backend not in SCAN_BACKENDS:
        raise ValueError(
            f"scan_backend must be one of {SCAN_BACKENDS}, got {backend!r}."
        )
    on_cuda = torch.device(device).type == "cuda"
    if backend == "torch":
        return "torch"
    if backend == "cuda":
        if not on_cuda:
            raise RuntimeError(
                "scan_backend='cuda' needs the model on a CUDA device; "
                "use scan_backend='auto' or 'torch' on CPU."
            )
        if not mamba_ssm_available():
            raise RuntimeError(
                "scan_backend='cuda' needs the mamba-ssm package "
                "(pip install mamba-ssm causal-conv1d); "
                "use scan_backend='auto' to fall back to the PyTorch scan."
            )
        return "cuda"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(
                "scan_backend='triton' needs the triton package (it comes with PyTorch's "
                "CUDA builds; pip install triton); use scan_backend='auto' or 'torch'."
            )
        if not on_cuda and not _triton_interpreted():
            raise RuntimeError(
                "scan_backend='triton' needs the model on a CUDA device (or TRITON_INTERPRET=1 "
                "to run the kernels on the CPU, slowly, for tests); use scan_backend='auto' "
                "or 'torch' on CPU."
            )
        return "triton"
    if not on_cuda:
        return "torch"
    if mamba_ssm_available():
        return "cuda"
    return "triton" if triton_available() else "torch"


def _plan_blocks(L: int, batch: int, row: int, block_elems: int) -> Tuple[int, int]:
    """Choose (time steps, batch rows) per work block.

    ``row`` is ED * N, the size of one state.  Short time blocks keep the
    saved boundary states few; small problems use long time blocks so the
    Python loop does not dominate.
    """
    steps = max(1, block_elems // max(1, batch * row))
    steps = min(L, max(8, min(steps, 64)))
    rows = max(1, min(batch, block_elems // (steps * row)))
    return steps, rows


def _to_blocks(x: torch.Tensor, rows: int) -> torch.Tensor:
    """(L, Bt, ...) -> (n_blocks, L, rows, ...), contiguous; pads the batch with zeros.

    Each block of ``rows`` sequences is then contiguous in time-major order,
    so every (time chunk x block) slice the scan touches is contiguous too.
    Zero rows are inert: delta = 0 keeps their states and gradients at zero.
    """
    L, Bt = x.shape[:2]
    if rows >= Bt:
        return x.unsqueeze(0).contiguous()
    n_blocks = -(-Bt // rows)
    pad = n_blocks * rows - Bt
    if pad:
        x = torch.cat([x, x.new_zeros(L, pad, *x.shape[2:])], dim=1)
    return x.reshape(L, n_blocks, rows, *x.shape[2:]).transpose(0, 1).contiguous()


def _from_blocks(x: torch.Tensor, Bt: int) -> torch.Tensor:
    """Inverse of :func:`_to_blocks`: (n_blocks, L, rows, ...) -> (L, Bt, ...)."""
    n_blocks, L, rows = x.shape[:3]
    if n_blocks == 1:
        return x[0, :, :Bt]
    return x.transpose(0, 1).reshape(L, n_blocks * rows, *x.shape[3:])[:, :Bt]


class _Buffer:
    """A (steps, ...) work buffer with its per-step views made once.

    The scan's loops touch one time step at a time; slicing the buffer anew
    for every step and chunk costs more Python time than some of the
    arithmetic.
    """

    def __init__(self, like, *shape):
        self.data = like.new_empty(*shape)
        self.steps = self.data.unbind(0)
        self._first = {}

    def first(self, n):
        view = self._first.get(n)
        if view is None:
            view = self._first[n] = self.data[:n]
        return view


def _forward_states(H_steps, dA_steps, h0):
    """In place: H[t] <- dA[t] * H[t-1] + H[t], with H[-1] = h0 (None = 0)."""
    prev = h0
    for H_t, dA_t in zip(H_steps, dA_steps):
        if prev is not None:
            H_t.addcmul_(dA_t, prev)
        prev = H_t


def _contract_n(v, S, out):
    """out[..., d] = sum_n v[..., n] * S[..., d, n]; v (..., G, N), S (..., G, Dg, N).

    Computed as (1 x N) @ (N x Dg) on the transposed view of S: on CPU this
    GEMV form is about three times faster than multiply-and-sum.
    """
    N, Dg = S.shape[-1], S.shape[-2]
    torch.bmm(
        v.reshape(-1, 1, N),
        S.reshape(-1, Dg, N).transpose(1, 2),
        out=out.reshape(-1, 1, Dg),
    )


def _contract_d(v, S, out):
    """out[..., n] = sum_d v[..., d] * S[..., d, n]; v (..., G, Dg), S (..., G, Dg, N)."""
    N, Dg = S.shape[-1], S.shape[-2]
    torch.bmm(v.reshape(-1, 1, Dg), S.reshape(-1, Dg, N), out=out.reshape(-1, 1, N))


class _SelectiveScanFn(torch.autograd.Function):
    """The recurrence only: y[t] = C[t] . h[t], time-major, no D/z/bias.

    Shapes: u, delta (L, Bt, G, Dg); A (G, Dg, N); B, C (L, Bt, G, N).
    Work is done per block of ``rows`` sequences and per chunk of ``steps``
    time steps; the forward pass keeps the state at each chunk boundary, the
    backward pass recomputes the states inside a chunk from it.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, block_elems, need_last, save):
        L, Bt, G, Dg = u.shape
        N = A.shape[-1]
        steps, rows = _plan_blocks(L, Bt, G * Dg * N, block_elems)
        n_chunks = (L + steps - 1) // steps
        A2 = A * _LOG2E  # exp(x) = exp2(x * log2(e)); exp2 is the faster kernel
        u_b, d_b, B_b, C_b = (_to_blocks(x, rows) for x in (u, delta, B, C))
        du_b = d_b * u_b
        n_blocks = u_b.shape[0]
        y_b = u.new_empty(n_blocks, L, rows, G, Dg)
        states = u.new_empty(n_blocks, n_chunks - 1, rows, G, Dg, N) if save else None
        last = u.new_empty(n_blocks, rows, G, Dg, N) if need_last else None

        buf_dA = _Buffer(u, steps, rows, G, Dg, N)
        buf_H = (_Buffer(u, steps, rows, G, Dg, N), _Buffer(u, steps, rows, G, Dg, N))
        for i in range(n_blocks):
            h = None  # state before the current chunk; None means zeros
            d_i, du_i, B_i, C_i, y_i = d_b[i], du_b[i], B_b[i], C_b[i], y_b[i]
            for c in range(n_chunks):
                t0, t1 = c * steps, min(L, (c + 1) * steps)
                nt = t1 - t0
                if states is not None and c > 0:
                    states[i, c - 1].copy_(h)
                dA = buf_dA.first(nt)
                torch.mul(d_i[t0:t1].unsqueeze(-1), A2, out=dA)
                dA.exp2_()
                H = buf_H[c % 2].first(nt)
                torch.mul(du_i[t0:t1].unsqueeze(-1), B_i[t0:t1].unsqueeze(-2), out=H)
                _forward_states(buf_H[c % 2].steps[:nt], buf_dA.steps[:nt], h)
                h = buf_H[c % 2].steps[nt - 1]
                _contract_n(C_i[t0:t1], H, out=y_i[t0:t1])
            if last is not None:
                last[i].copy_(h)

        y = _from_blocks(y_b, Bt)
        if save:
            ctx.save_for_backward(u_b, d_b, A, B_b, C_b, states)
            ctx.plan = (steps, rows, Bt)
        if need_last:
            last = last.reshape(n_blocks * rows, G, Dg, N)[:Bt]
            ctx.mark_non_differentiable(last)
            return y, last
        return y

    @staticmethod
    def backward(ctx, dy, *unused):
        u_b, d_b, A, B_b, C_b, states = ctx.saved_tensors
        steps, rows, Bt = ctx.plan
        n_blocks, L = u_b.shape[:2]
        G, Dg, N = A.shape
        n_chunks = (L + steps - 1) // steps
        dy_b = _to_blocks(dy, rows)
        A2 = A * _LOG2E
        du_b = d_b * u_b

        g_du = torch.empty_like(u_b)
        g_delta = torch.empty_like(u_b)
        g_B = torch.empty_like(B_b)
        g_C = torch.empty_like(C_b)
        g_A = torch.zeros_like(A)

        buf_dA = _Buffer(u_b, steps, rows, G, Dg, N)
        buf_H = _Buffer(u_b, steps, rows, G, Dg, N)
        buf_G = (_Buffer(u_b, steps, rows, G, Dg, N), _Buffer(u_b, steps, rows, G, Dg, N))
        buf_Q = _Buffer(u_b, steps, rows, G, Dg, N)
        g_A_part = torch.empty_like(A)
        for i in range(n_blocks):
            carry = None  # dA[t1] * grad(h[t1]) from the chunk after this one
            d_i, du_i, B_i, C_i, dy_i = d_b[i], du_b[i], B_b[i], C_b[i], dy_b[i]
            for c in reversed(range(n_chunks)):
                t0, t1 = c * steps, min(L, (c + 1) * steps)
                nt = t1 - t0
                h0 = states[i, c - 1] if c > 0 else None
                delta_c, du_c, B_c, dy_c = d_i[t0:t1], du_i[t0:t1], B_i[t0:t1], dy_i[t0:t1]

                # Recompute this chunk's decays and states.
                dA, dA_t = buf_dA.first(nt), buf_dA.steps
                torch.mul(delta_c.unsqueeze(-1), A2, out=dA)
                dA.exp2_()
                H = buf_H.first(nt)
                torch.mul(du_c.unsqueeze(-1), B_c.unsqueeze(-2), out=H)
                _forward_states(buf_H.steps[:nt], dA_t[:nt], h0)

                # Gradient w.r.t. the states, backwards in time.
                Gr, G_t = buf_G[c % 2].first(nt), buf_G[c % 2].steps
                torch.mul(dy_c.unsqueeze(-1), C_i[t0:t1].unsqueeze(-2), out=Gr)
                if carry is not None:
                    G_t[nt - 1].add_(carry)
                for t in range(nt - 2, -1, -1):
                    G_t[t].addcmul_(dA_t[t + 1], G_t[t + 1])

                # Contractions over ED or N.
                _contract_d(dy_c, H, out=g_C[i, t0:t1])
                _contract_d(du_c, Gr, out=g_B[i, t0:t1])
                _contract_n(B_c, Gr, out=g_du[i, t0:t1])

                # Q = grad(h[t]) * dA[t] * h[t-1], the gradient of delta[t] * A.
                Gr.mul_(dA)
                carry = G_t[0] if c > 0 else None
                Q = buf_Q.first(nt)
                if nt > 1:
                    torch.mul(Gr[1:], H[:-1], out=Q[1:])
                if h0 is not None:
                    torch.mul(G_t[0], h0, out=buf_Q.steps[0])
                else:
                    buf_Q.steps[0].zero_()
                torch.mul(Q, delta_c.unsqueeze(-1), out=dA)
                g_A.add_(torch.sum(dA, (0, 1), out=g_A_part))
                torch.sum(Q.mul_(A), -1, out=g_delta[i, t0:t1])

        g_delta.addcmul_(g_du, u_b)
        g_u = g_du.mul_(d_b)
        return (
            _from_blocks(g_u, Bt),
            _from_blocks(g_delta, Bt),
            g_A,
            _from_blocks(g_B, Bt),
            _from_blocks(g_C, Bt),
            None,
            None,
            None,
        )


class _ScanAtPositionsFn(torch.autograd.Function):
    """The scan's output at one position per sequence, in parallel form.

    When only y[p_b] is needed for each sequence b (next-item training and
    prediction read the last position), unrolling the recurrence gives

        h[p] = sum_{s <= p} exp(A * W[s]) * delta[s] * u[s] * B[s],
        W[s] = delta[s+1] + ... + delta[p],

    a sum of independent terms: no loop over time, no states to keep for the
    backward pass (W is a reverse cumulative sum), and about 40% less work
    than the recurrence.  Shapes as :class:`_SelectiveScanFn`, plus
    positions (Bt,); returns y (Bt, G, Dg).
    """

    @staticmethod
    def _prepare(u, delta, C, positions):
        L, Bt = u.shape[:2]
        rows = torch.arange(Bt, device=u.device)
        mask = torch.arange(L, device=u.device)[:, None] <= positions[None, :]
        mask = mask.to(u.dtype)[:, :, None, None]  # (L, Bt, 1, 1)
        dm = delta * mask
        du = dm * u
        # W[s] = sum_{r > s} dm[r], accumulated from the end for accuracy.
        W = dm.flip(0).cumsum(0).flip(0) - dm
        return rows, mask, dm, du, W, C[positions, rows]

    @staticmethod
    def forward(ctx, u, delta, A, B, C, positions, block_elems):
        L, Bt, G, Dg = u.shape
        N = A.shape[-1]
        steps, rows = _plan_blocks(L, Bt, G * Dg * N, block_elems)
        A2 = A * _LOG2E
        _, _, _, du, W, C_at = _ScanAtPositionsFn._prepare(u, delta, C, positions)
        W_b, du_b, B_b = (_to_blocks(x, rows) for x in (W, du, B))
        n_blocks = W_b.shape[0]
        h = u.new_zeros(n_blocks, rows, G, Dg, N)
        buf = u.new_empty(steps, rows, G, Dg, N)
        for i in range(n_blocks):
            for t0 in range(0, L, steps):
                t1 = min(L, t0 + steps)
                E = buf[: t1 - t0]
                torch.mul(W_b[i, t0:t1].unsqueeze(-1), A2, out=E)
                E.clamp_(min=_MIN_LOG2_DECAY).exp2_()
                E.mul_(B_b[i, t0:t1].unsqueeze(-2))
                E.mul_(du_b[i, t0:t1].unsqueeze(-1))
                h[i] += E.sum(0)
        h = h.reshape(n_blocks * rows, G, Dg, N)[:Bt]
        y = u.new_empty(Bt, G, Dg)
        _contract_n(C_at, h, out=y)
        ctx.save_for_backward(u, delta, A, B, C, positions, h)
        ctx.plan = (steps, rows)
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, positions, h = ctx.saved_tensors
        steps, rows = ctx.plan
        L, Bt, G, Dg = u.shape
        N = A.shape[-1]
        dy = dy.contiguous()
        A2 = A * _LOG2E
        index, mask, dm, du, W, C_at = _ScanAtPositionsFn._prepare(u, delta, C, positions)

        # y = C_at . h  and  h = sum_s E[s] * du[s] (x) B[s], with E = exp(A W).
        g_C_at = u.new_empty(Bt, G, N)
        _contract_d(dy, h, out=g_C_at)
        CB = B * C_at  # (L, Bt, G, N)
        dy_du = du * dy  # (L, Bt, G, Dg)
        W_b, CB_b, dydu_b = (_to_blocks(x, rows) for x in (W, CB, dy_du))
        WdYdu_b = W_b * dydu_b
        n_blocks = W_b.shape[0]
        s_du = torch.empty_like(W_b)  # sum_n E * CB
        s_B = torch.empty_like(CB_b)  # sum_d E * dy_du
        s_W = torch.empty_like(W_b)  # sum_n E * A * CB
        g_A = torch.zeros_like(A)
        buf_E = u.new_empty(steps, rows, G, Dg, N)
        buf_T = u.new_empty(steps, rows, G, Dg, N)
        for i in range(n_blocks):
            for t0 in range(0, L, steps):
                t1 = min(L, t0 + steps)
                E, T = buf_E[: t1 - t0], buf_T[: t1 - t0]
                torch.mul(W_b[i, t0:t1].unsqueeze(-1), A2, out=E)
                E.clamp_(min=_MIN_LOG2_DECAY).exp2_()
                CB_c = CB_b[i, t0:t1]
                _contract_n(CB_c, E, out=s_du[i, t0:t1])
                _contract_d(dydu_b[i, t0:t1], E, out=s_B[i, t0:t1])
                torch.mul(E, A, out=T)
                _contract_n(CB_c, T, out=s_W[i, t0:t1])
                torch.mul(E, WdYdu_b[i, t0:t1].unsqueeze(-1), out=T)
                T.mul_(CB_c.unsqueeze(-2))
                g_A += T.sum((0, 1))

        g_du = _from_blocks(s_du, Bt) * dy
        g_B = _from_blocks(s_B, Bt) * C_at
        g_W = _from_blocks(s_W, Bt) * dy_du
        # W[s] = sum_{r > s} dm[r]  =>  grad(dm)[r] = sum_{s < r} grad(W)[s].
        g_dm = g_W.cumsum(0) - g_W + g_du * u
        g_u = g_du * dm
        g_delta = g_dm * mask
        g_C = torch.zeros_like(C)
        g_C[positions, index] = g_C_at
        return g_u, g_delta, g_A, g_B, g_C, None, None


def _check_shapes(u, delta, A, B, C):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(
            f"u and delta must both have shape (batch, ED, L); got {tuple(u.shape)} "
            f"and {tuple(delta.shape)}."
        )
    if A.dim() != 2 or A.shape[0] != u.shape[1]:
        raise ValueError(
            f"A must have shape (ED, N) = ({u.shape[1]}, N); got {tuple(A.shape)}."
        )
    if A.is_complex():
        raise NotImplementedError("Complex A is not supported by recbole_hyper's scan.")
    for name, m in (("B", B), ("C", C)):
        if m.dim() not in (3, 4):
            raise ValueError(
                f"{name} must have shape (batch, N, L) or (batch, groups, N, L); "
                f"got {tuple(m.shape)}."
            )
        if m.shape[0] != u.shape[0] or m.shape[-1] != u.shape[2] or m.shape[-2] != A.shape[1]:
            raise ValueError(
                f"{name} has shape {tuple(m.shape)}, which does not match "
                f"batch={u.shape[0]}, N={A.shape[1]}, L={u.shape[2]}."
            )
        if m.dim() == 4 and u.shape[1] % m.shape[1] != 0:
            raise ValueError(
                f"{name} has {m.shape[1]} groups, which do not divide ED={u.shape[1]}."
            )


def selective_scan_time_major(
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
    output_at: Optional[torch.Tensor] = None,
    block_elems: int = _DEFAULT_BLOCK_ELEMS,
    backend: str = "torch",
):
    """Selective scan on time-major tensors with the PyTorch (or Triton) backend.

    Shapes: u, delta, z (L, batch, ED); A (ED, N); B, C (L, batch, N) or
    (L, batch, groups, N); D, delta_bias (ED,).  Returns y of shape
    (L, batch, ED) and, with ``return_last_state``, the state after the last
    step, (batch, ED, N).  Half-precision inputs are computed in float32.

    With ``output_at`` (batch,) of time indices, only y[output_at[b], b] is
    computed and returned, shape (batch, ED), with the parallel form of
    :class:`_ScanAtPositionsFn`; ``z`` may then be given at those positions
    only, (batch, ED).

    ``backend="triton"`` runs the Triton kernels instead (see
    :func:`resolve_backend`); with ``output_at`` they compute every output and
    the one asked for is read off.
    """
    if output_at is not None and return_last_state:
        raise ValueError("return_last_state and output_at cannot be combined.")
    if backend == "triton":
        return _time_major_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, output_at
        )
    if backend != "torch":
        raise ValueError(f"selective_scan_time_major runs the 'torch' or 'triton' backend, not {backend!r}.")
    L, batch, ED = u.shape
    N = A.shape[-1]
    out_dtype = u.dtype
    compute = torch.promote_types(u.dtype, torch.float32)
    if B.dim() == 3:
        B = B.unsqueeze(2)
    if C.dim() == 3:
        C = C.unsqueeze(2)
    G = B.shape[2]
    if C.shape[2] != G:
        raise ValueError("B and C must have the same number of groups.")
    Dg = ED // G

    delta = delta.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)
    if delta_softplus:
        delta = F.softplus(delta)
    uc = u.to(compute)
    # No .contiguous() on u, delta, B, C: the Functions copy them into their
    # blocked layout once, whatever their strides.
    core = (
        uc.reshape(L, batch, G, Dg),
        delta.reshape(L, batch, G, Dg),
        A.to(compute).reshape(G, Dg, N).contiguous(),
        B.to(compute),
        C.to(compute),
    )
    if output_at is not None:
        output_at = _check_output_at(output_at, u)
        y = _ScanAtPositionsFn.apply(*core, output_at, block_elems).reshape(batch, ED)
        return _skip_and_gate_at(y, uc, output_at, D, z, compute).to(out_dtype)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
    res = _SelectiveScanFn.apply(*core, block_elems, return_last_state, grad)
    y, last = res if return_last_state else (res, None)
    y = y.reshape(L, batch, ED)
    if D is not None:
        y = y + uc * D.to(compute)
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(out_dtype)
    if return_last_state:
        return y, last.reshape(batch, ED, N)
    return y


def _check_output_at(output_at, u):
    L, batch = u.shape[:2]
    output_at = output_at.to(device=u.device, dtype=torch.long)
    if output_at.shape != (batch,) or (output_at.numel() and (output_at.min() < 0 or output_at.max() >= L)):
        raise ValueError(f"output_at must be (batch,) = ({batch},) time indices in [0, {L}).")
    return output_at


def _skip_and_gate_at(y, uc, output_at, D, z, compute):
    """(y + D u) * silu(z) at one position per row; z is (L, batch, ED) or (batch, ED)."""
    rows = torch.arange(y.shape[0], device=y.device)
    if D is not None:
        y = y + uc[output_at, rows] * D.to(compute)
    if z is not None:
        y = y * F.silu((z[output_at, rows] if z.dim() == 3 else z).to(compute))
    return y


def _time_major_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, output_at):
    scan = _load_triton()
    if scan is None:
        resolve_backend("triton", u.device)  # raises the error that says what to install
    if output_at is None:
        return scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    output_at = _check_output_at(output_at, u)
    compute = torch.promote_types(u.dtype, torch.float32)
    y = scan(u.to(compute), delta, A, B, C, None, None, delta_bias, delta_softplus)
    rows = torch.arange(u.shape[1], device=u.device)
    return _skip_and_gate_at(y[output_at, rows], u.to(compute), output_at, D, z, compute).to(u.dtype)


def selective_scan(
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
    backend: str = "auto",
):
    """Selective scan with mamba-ssm's ``selective_scan_fn`` interface.

    Args:
        u, delta: (batch, ED, L).
        A: (ED, N), real (the state matrix, usually ``-exp(A_log)``).
        B, C: (batch, N, L), or (batch, groups, N, L) where groups divides ED.
        D: optional (ED,) skip weight; z: optional (batch, ED, L) gate, the
            output is multiplied by ``silu(z)``.
        delta_bias: optional (ED,) added to delta; ``delta_softplus`` applies
            softplus to delta (after the bias).
        return_last_state: also return the final state, (batch, ED, N).
        backend: ``auto`` (for CUDA tensors mamba-ssm's kernels when installed,
            else our Triton kernels when Triton is installed; PyTorch
            otherwise), ``cuda``, ``triton`` or ``torch``.

    Returns:
        y of shape (batch, ED, L) in ``u``'s dtype, and the last state when
        asked for.
    """
    _check_shapes(u, delta, A, B, C)
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have the shape of u {tuple(u.shape)}; got {tuple(z.shape)}.")
    resolved = resolve_backend(backend, u.device)
    if resolved == "cuda":
        return _load_mamba_ssm()(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    def tm(x):
        return None if x is None else x.permute(2, 0, 1)  # (b, d, l) -> (l, b, d)
    Bt = B.permute(2, 0, 1) if B.dim() == 3 else B.permute(3, 0, 1, 2)
    Ct = C.permute(2, 0, 1) if C.dim() == 3 else C.permute(3, 0, 1, 2)
    res = selective_scan_time_major(
        tm(u), tm(delta), A, Bt, Ct, D, tm(z), delta_bias, delta_softplus, return_last_state,
        backend=resolved,
    )
    if return_last_state:
        y, last = res
        return y.permute(1, 2, 0), last
    return res.permute(1, 2, 0)
