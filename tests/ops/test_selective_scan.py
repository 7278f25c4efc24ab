"""The selective scan against an independent float64 sequential reference."""


import pytest
import torch

import recbole_hyper.ops.scan as scan_module
from recbole_hyper import selective_scan
from recbole_hyper.ops import resolve_backend, selective_scan_time_major
from recbole_hyper.ops import selective_scan_ref as reference_scan


def make_inputs(b, d, n, L, groups=0, dtype=torch.float64, with_z=True, with_bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    def r(*s):
        return torch.randn(*s, generator=gen, dtype=dtype)
    bc_shape = (b, groups, n, L) if groups else (b, n, L)
    inputs = dict(
        u=r(b, d, L),
        delta=r(b, d, L) * 0.5,
        A=-torch.exp(r(d, n) * 0.5),
        B=r(*bc_shape),
        C=r(*bc_shape),
        D=r(d),
        z=r(b, d, L) if with_z else None,
        delta_bias=r(d) * 0.3 if with_bias else None,
    )
    return {k: (v.requires_grad_() if v is not None else None) for k, v in inputs.items()}


def grads_of(out, inputs, g):
    names = [k for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad(out, [inputs[k] for k in names], g)
    return dict(zip(names, grads))


SHAPES = [
    # (batch, ED, N, L, groups)
    (2, 4, 3, 1, 0),  # L = 1
    (3, 6, 4, 7, 0),  # odd L
    (2, 8, 2, 33, 0),  # several time chunks
    (4, 8, 3, 12, 2),  # grouped B/C
    (5, 4, 2, 19, 4),  # one channel per group
]


@pytest.mark.parametrize("b,d,n,L,groups", SHAPES)
@pytest.mark.parametrize("small_blocks", [False, True])
def test_outputs_and_gradients_match_reference(b, d, n, L, groups, small_blocks, monkeypatch):
    if small_blocks:
        # 3 time steps x 2 sequences per block: many chunks, several batch
        # blocks, and a zero-padded last block when the batch is odd.
        monkeypatch.setattr(
            scan_module, "_plan_blocks", lambda L_, batch, row, be: (min(L_, 3), min(batch, 2))
        )
    inp = make_inputs(b, d, n, L, groups)
    ref_y, _ = reference_scan(**inp, delta_softplus=True)
    y = selective_scan(**inp, delta_softplus=True, backend="torch")
    assert y.shape == (b, d, L)
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)

    g = torch.randn_like(ref_y)
    ref_g = grads_of(ref_y, inp, g)
    our_g = grads_of(y, inp, g)
    for name in ref_g:
        torch.testing.assert_close(our_g[name], ref_g[name], rtol=1e-9, atol=1e-9, msg=name)


def test_without_optional_inputs_and_last_state():
    inp = make_inputs(3, 5, 4, 9, with_z=False, with_bias=False)
    inp["D"] = None
    ref_y, ref_h = reference_scan(**inp)
    y, last = selective_scan(**inp, return_last_state=True, backend="torch")
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)
    assert last.shape == (3, 5, 4)
    torch.testing.assert_close(last, ref_h, rtol=1e-10, atol=1e-10)


def test_float32_close_to_float64_reference():
    inp = make_inputs(4, 16, 8, 40, dtype=torch.float32)
    ref_y, _ = reference_scan(**inp, delta_softplus=True)
    y = selective_scan(**inp, delta_softplus=True, backend="torch")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(ref_y)
    ref_g = grads_of(ref_y, inp, g)
    our_g = grads_of(y, inp, g.float())
    for name in ref_g:
        scale = ref_g[name].abs().max().item() + 1e-6
        err = (our_g[name].double() - ref_g[name]).abs().max().item()
        assert err / scale < 1e-4, (name, err, scale)


def test_bfloat16_inputs_computed_in_float32():
    inp = make_inputs(2, 8, 4, 10, dtype=torch.float32)
    ref_y, _ = reference_scan(**inp, delta_softplus=True)
    low = {k: (v.detach().bfloat16() if k in ("u", "delta", "z") else v.detach()) for k, v in inp.items()}
    y = selective_scan(**low, delta_softplus=True, backend="torch")
    assert y.dtype == torch.bfloat16
    ref_low, _ = reference_scan(**low, delta_softplus=True)
    torch.testing.assert_close(y.double(), ref_low, rtol=2e-2, atol=2e-2)


def test_gradcheck_small():
    inp = make_inputs(2, 4, 3, 5, groups=2)
    names = list(inp)

    def fn(*args):
        kwargs = dict(zip(names, args))
        return selective_scan(**kwargs, delta_softplus=True, backend="torch")

    assert torch.autograd.gradcheck(fn, tuple(inp[k] for k in names), eps=1e-6, atol=1e-6)


def test_no_grad_forward_saves_nothing():
    inp = make_inputs(2, 4, 3, 6)
    with torch.no_grad():
        y = selective_scan(**inp, backend="torch")
    assert y.grad_fn is None


def test_time_major_entry_point_matches():
    inp = make_inputs(3, 6, 4, 11, groups=3)
    ref_y, _ = reference_scan(**inp, delta_softplus=True)
    def tm(x):
        return x.permute(2, 0, 1)
    y = selective_scan_time_major(
        tm(inp["u"]),
        tm(inp["delta"]),
        inp["A"],
        inp["B"].permute(3, 0, 1, 2),
        inp["C"].permute(3, 0, 1, 2),
        inp["D"],
        tm(inp["z"]),
        inp["delta_bias"],
        delta_softplus=True,
    )
    torch.testing.assert_close(y.permute(1, 2, 0), ref_y, rtol=1e-10, atol=1e-10)


def test_memory_stays_below_materialised_size(monkeypatch):
    """The saved state is one state per chunk of time steps, not one per step."""
    saved = {}
    original = scan_module._SelectiveScanFn.forward

    def spy(ctx, *args):
        out = original(ctx, *args)
        saved["tensors"] = ctx.saved_tensors
        return out

    monkeypatch.setattr(scan_module._SelectiveScanFn, "forward", staticmethod(spy))
    b, d, n, L = 4, 32, 16, 64
    inp = make_inputs(b, d, n, L, dtype=torch.float32)
    selective_scan(**inp, backend="torch")
    total = sum(t.numel() for t in saved["tensors"])
    assert total < b * d * L * n / 4, total


def test_invalid_shapes_fail_clearly():
    inp = make_inputs(2, 4, 3, 5)
    bad = dict(inp, A=inp["A"][:, :2])
    with pytest.raises(ValueError, match="does not match"):
        selective_scan(**bad)
    bad = dict(inp, u=inp["u"][:, :3])
    with pytest.raises(ValueError, match="u and delta"):
        selective_scan(**bad)
    bad = dict(inp, B=torch.randn(2, 3, 3, 5))
    with pytest.raises(ValueError, match="groups"):
        selective_scan(**bad)


def test_backend_resolution():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(RuntimeError, match="CUDA device"):
        resolve_backend("cuda", cpu)
    with pytest.raises(ValueError, match="scan_backend"):
        resolve_backend("fast", cpu)


def _cuda_kernels_usable():
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not scan_module.mamba_ssm_available():
        return "mamba-ssm is not installed"
    return ""


@pytest.mark.skipif(bool(_cuda_kernels_usable()), reason=_cuda_kernels_usable() or "n/a")
def test_torch_backend_matches_mamba_ssm_kernels():
    inp = make_inputs(4, 64, 16, 70, dtype=torch.float32)
    cuda = {k: v.detach().cuda().requires_grad_() for k, v in inp.items()}
    y_k = selective_scan(**cuda, delta_softplus=True, backend="cuda")
    y_t = selective_scan(**cuda, delta_softplus=True, backend="torch")
    torch.testing.assert_close(y_t, y_k, rtol=1e-3, atol=1e-3)
    g = torch.randn_like(y_k)
    gk = grads_of(y_k, cuda, g)
    gt = grads_of(y_t, cuda, g)
    for name in gk:
        scale = gk[name].abs().max().item() + 1e-6
        assert (gt[name] - gk[name]).abs().max().item() / scale < 1e-2, name


@pytest.mark.parametrize("b,d,n,L,groups", SHAPES)
@pytest.mark.parametrize("small_blocks", [False, True])
def test_output_at_positions_matches_reference(b, d, n, L, groups, small_blocks, monkeypatch):
    """The parallel form used for one output per sequence (next-item prediction)."""
    if small_blocks:
        monkeypatch.setattr(
            scan_module, "_plan_blocks", lambda L_, batch, row, be: (min(L_, 3), min(batch, 2))
        )
    inp = make_inputs(b, d, n, L, groups, seed=5)
    positions = torch.randint(0, L, (b,), generator=torch.Generator().manual_seed(b + L))
    ref_y, _ = reference_scan(**inp, delta_softplus=True)
    ref = ref_y[torch.arange(b), :, positions]
    def tm(x):
        return x.permute(2, 0, 1)
    def bc(x):
        return x.permute(-1, *range(x.dim() - 1))
    y = selective_scan_time_major(
        tm(inp["u"]), tm(inp["delta"]), inp["A"], bc(inp["B"]), bc(inp["C"]),
        inp["D"], tm(inp["z"]), inp["delta_bias"], delta_softplus=True, output_at=positions,
    )
    assert y.shape == (b, d)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    ref_g = grads_of(ref, inp, g)
    our_g = grads_of(y, inp, g)
    for name in ref_g:
        torch.testing.assert_close(our_g[name], ref_g[name], rtol=1e-9, atol=1e-9, msg=name)


def test_positions_with_long_decays_stay_finite():
    """Strong decays over long spans underflow to zero, never to NaN."""
    inp = make_inputs(2, 4, 3, 60, dtype=torch.float32, with_z=False, with_bias=False)
    with torch.no_grad():
        inp["delta"].mul_(0).add_(5.0)
        inp["A"].mul_(20)
    positions = torch.tensor([59, 30])
    def tm(x):
        return x.permute(2, 0, 1)
    y = selective_scan_time_major(
        tm(inp["u"]), tm(inp["delta"]), inp["A"], inp["B"].permute(2, 0, 1), inp["C"].permute(2, 0, 1),
        output_at=positions,
    )
    ref_y, _ = reference_scan(**{k: v for k, v in inp.items() if k in ("u", "delta", "A", "B", "C")})
    torch.testing.assert_close(y.double(), ref_y[torch.arange(2), :, positions], rtol=1e-4, atol=1e-5)
    y.sum().backward()
    assert all(torch.isfinite(inp[k].grad).all() for k in ("u", "delta", "A", "B", "C"))
