"""The Triton selective scan against the float64 step-by-step reference.

Without a CUDA device the kernels run in Triton's interpreter on CPU tensors:
TRITON_INTERPRET must be set before the kernels are defined, so it is set
here, at collection, before anything imports recbole_hyper.ops.scan_triton.
Shapes are small (the interpreter runs a kernel's program instances one by
one in Python) but reach every edge: L not a multiple of the kernel's time
chunk, exactly one chunk, L = 1, odd ED and N, more channels than one program
holds, grouped B/C, batch 1, and each option (D, z, delta bias, softplus) on
and off.
"""

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from recbole_hyper.layers.curvature import CurvatureAwareMamba  # noqa: E402
from recbole_hyper.layers.lorentz import Lorentz  # noqa: E402
from recbole_hyper.layers.mamba import Mamba  # noqa: E402
from recbole_hyper.layers.rope import RoPEMamba  # noqa: E402
from recbole_hyper.ops import scan as scan_module  # noqa: E402
from recbole_hyper.ops import (  # noqa: E402
    scan_triton,  # noqa: E402
    selective_scan,
    selective_scan_ref,
    selective_scan_time_major,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not scan_triton.INTERPRETED:
    pytest.skip(
        "recbole_hyper.ops.scan_triton was imported before TRITON_INTERPRET=1 was set",
        allow_module_level=True,
    )


def _inputs(b, ED, N, L, groups=None, D=True, z=True, bias=True, dtype=torch.float64, seed=0, delta_scale=0.5):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).to(DEVICE).requires_grad_()

    bc = (b, N, L) if groups is None else (b, groups, N, L)
    return {
        "u": rnd(b, ED, L),
        "delta": rnd(b, ED, L, scale=delta_scale),
        "A": (-torch.rand(ED, N, generator=g, dtype=dtype) * 2 - 0.1).to(DEVICE).requires_grad_(),
        "B": rnd(*bc),
        "C": rnd(*bc),
        "D": rnd(ED) if D else None,
        "z": rnd(b, ED, L) if z else None,
        "delta_bias": rnd(ED, scale=0.5) if bias else None,
    }


def _time_major(x):
    if x is None:
        return None
    return x.permute(2, 0, 1) if x.dim() == 3 else x.permute(3, 0, 1, 2)


def _grads(y, tensors, gy):
    return torch.autograd.grad((y * gy).sum(), tensors)


CASES = [
    # b, ED, N, L, groups, D, z, bias, softplus[, delta scale]
    (2, 8, 4, 37, None, True, True, True, True),  # three chunks, the last partial
    (1, 5, 3, 17, None, False, False, False, False),  # batch 1, odd ED and N, no option
    (2, 12, 5, 20, 3, True, True, True, True),  # grouped B and C
    (2, 40, 7, 16, None, True, False, True, True),  # two channel blocks, one exact chunk
    (3, 6, 4, 1, None, True, True, True, True),  # L = 1
    (2, 6, 4, 19, None, True, False, False, False),  # D only
    (2, 6, 4, 19, None, False, True, False, False),  # z only
    (2, 6, 4, 19, None, False, False, True, False),  # delta bias only
    (2, 6, 4, 19, None, False, False, False, True),  # softplus only
    (2, 6, 4, 19, None, True, True, True, True, 15.0),  # deltas beyond softplus's threshold of 20
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_outputs_gradients_and_last_state_match_the_float64_reference(case):
    b, ED, N, L, groups, D, z, bias, softplus, *scale = case
    x = _inputs(b, ED, N, L, groups, D, z, bias, delta_scale=scale[0] if scale else 0.5)
    if scale:
        assert (x["delta"] + x["delta_bias"][:, None] > 20).any()
    names = [k for k, v in x.items() if v is not None]
    tensors = [x[k] for k in names]
    y_ref, last_ref = selective_scan_ref(**x, delta_softplus=softplus)
    gy = torch.randn_like(y_ref)
    g_ref = _grads(y_ref, tensors, gy)

    y, last = scan_triton.selective_scan_triton(
        _time_major(x["u"]), _time_major(x["delta"]), x["A"], _time_major(x["B"]), _time_major(x["C"]),
        x["D"], _time_major(x["z"]), x["delta_bias"], softplus, return_last_state=True,
    )
    y = y.permute(1, 2, 0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, last_ref, rtol=1e-10, atol=1e-10)
    for name, got, want in zip(names, _grads(y, tensors, gy), g_ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_float32_through_the_public_interface_with_strided_inputs():
    # selective_scan's (batch, ED, L) tensors reach the kernels as strided time-major views.
    x = _inputs(2, 10, 6, 23, dtype=torch.float32, seed=1)
    tensors = [v for v in x.values() if v is not None]
    y, last = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="triton")
    assert y.dtype == torch.float32
    y_ref, last_ref = selective_scan_ref(**x, delta_softplus=True)
    torch.testing.assert_close(y, y_ref.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(last, last_ref.float(), rtol=1e-4, atol=1e-5)
    gy = torch.randn_like(y)
    for got, want in zip(_grads(y, tensors, gy), _grads(y_ref, tensors, gy.double())):
        torch.testing.assert_close(got, want.float(), rtol=1e-3, atol=1e-4)


def test_output_at_reads_the_full_scan_at_one_position():
    x = _inputs(3, 8, 4, 21, seed=2)
    at = torch.tensor([20, 0, 9], device=DEVICE)
    tm = {k: _time_major(v) if k in ("u", "delta", "B", "C", "z") else v for k, v in x.items()}
    got = selective_scan_time_major(**tm, delta_softplus=True, output_at=at, backend="triton")
    y_ref, _ = selective_scan_ref(**x, delta_softplus=True)
    want = y_ref[torch.arange(3), :, at]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # z given at the positions only, as the Mamba block passes it.
    z_at = tm["z"][at, torch.arange(3)]
    got2 = selective_scan_time_major(**{**tm, "z": z_at}, delta_softplus=True, output_at=at, backend="triton")
    torch.testing.assert_close(got2, want, rtol=1e-10, atol=1e-10)


def _block_pair(cls, **kwargs):
    torch.manual_seed(0)
    a = cls(8, d_state=4, d_conv=3, scan_backend="torch", **kwargs).double().to(DEVICE)
    with torch.no_grad():
        a.A_log.add_(torch.randn_like(a.A_log) * 0.3)
        a.dt_proj.bias.normal_(0, 0.5)
        a.conv1d.bias.normal_()
    b = cls(8, d_state=4, d_conv=3, scan_backend="triton", **kwargs).double().to(DEVICE)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("variant", ["mamba", "rope", "curvature"])
def test_mamba_blocks_give_the_same_outputs_and_gradients_on_either_backend(variant):
    """The Mamba block and the variants that feed the scan their own B, C (RoPE-Mamba)
    or A (HMamba's curvature-aware state matrix, with kappa learnable)."""
    lorentz = Lorentz(curvature=0.7, learnable=True).double().to(DEVICE)
    cls, kwargs = {"mamba": (Mamba, {}), "rope": (RoPEMamba, {}),
                   "curvature": (CurvatureAwareMamba, {"lorentz": lorentz})}[variant]
    ref, tri = _block_pair(cls, **kwargs)
    x = torch.randn(2, 18, 8, dtype=torch.float64, device=DEVICE)
    y_ref, y_tri = ref(x), tri(x)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-9, atol=1e-9)
    gy = torch.randn_like(y_ref)
    extra = list(lorentz.parameters()) if variant == "curvature" else []
    assert variant != "curvature" or extra, "the curvature must be a parameter here"
    params = list(ref.parameters()) + extra
    g_ref = torch.autograd.grad((y_ref * gy).sum(), params)
    params_tri = list(tri.parameters()) + extra
    g_tri = torch.autograd.grad((y_tri * gy).sum(), params_tri)
    for (name, _), got, want in zip(list(ref.named_parameters()) + [("curvature", None)] * len(extra), g_tri, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")
    # One output per row (the models' training and prediction path).
    at = torch.tensor([17, 4], device=DEVICE)
    torch.testing.assert_close(tri(x, output_at=at), ref(x, output_at=at), rtol=1e-9, atol=1e-9)


def test_backend_choice():
    cpu = torch.device("cpu")
    # CPU behaviour is unchanged: auto is the PyTorch scan even with Triton installed.
    assert scan_module.resolve_backend("auto", cpu) == "torch"
    assert scan_module.triton_available()
    if DEVICE == "cpu":
        assert scan_module.resolve_backend("triton", cpu) == "triton"  # the interpreter runs it here
    else:
        assert scan_module.resolve_backend("auto", torch.device("cuda")) in ("cuda", "triton")


def test_triton_backend_on_cpu_without_the_interpreter_is_a_clear_error():
    code = (
        "import torch\n"
        "from recbole_hyper.ops.scan import resolve_backend\n"
        "try:\n"
        "    resolve_backend('triton', torch.device('cpu'))\n"
        "except RuntimeError as e:\n"
        "    print('ERROR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERROR") and "CUDA device" in out.stdout and "TRITON_INTERPRET=1" in out.stdout


def test_triton_backend_without_triton_says_what_to_install(monkeypatch):
    monkeypatch.setattr(scan_module, "_load_triton", lambda: None)
    with pytest.raises(RuntimeError, match="pip install triton"):
        scan_module.resolve_backend("triton", torch.device("cpu"))
    # auto on a CUDA device falls back to the PyTorch scan without mamba-ssm or Triton.
    monkeypatch.setattr(scan_module, "_load_mamba_ssm", lambda: None)
    assert scan_module.resolve_backend("auto", torch.device("cuda")) == "torch"
