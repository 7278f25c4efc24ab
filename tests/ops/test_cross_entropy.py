"""Blocked cross-entropy against PyTorch's cross-entropy over the full logits, in float64."""

import pytest
import torch
import torch.nn.functional as F

from recbole_hyper.ops.cross_entropy import linear_cross_entropy


@pytest.mark.parametrize("n,V,block", [(1, 5, 1 << 22), (37, 11, 30), (64, 97, 97 * 8), (50, 13, 1)])
def test_loss_and_gradients_equal_the_reference(n, V, block):
    g = torch.Generator().manual_seed(n + V)
    h = torch.randn(n, 6, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(V, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, V, (n,), generator=g)
    ours = linear_cross_entropy(h, table, y, block_elements=block)
    (gh, gt) = torch.autograd.grad(3.0 * ours, (h, table))
    ref = F.cross_entropy(h @ table.t(), y)
    (rh, rt) = torch.autograd.grad(3.0 * ref, (h, table))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gh, rh, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gt, rt, rtol=1e-10, atol=1e-12)


def test_float32_large_logits_and_no_grad():
    torch.manual_seed(0)
    h = 30 * torch.randn(300, 16)
    table = torch.randn(1000, 16)
    y = torch.randint(1, 1000, (300,))
    with torch.no_grad():
        ours = linear_cross_entropy(h, table, y, block_elements=4096)
    ref = F.cross_entropy(h.double() @ table.double().t(), y)
    assert torch.isfinite(ours) and ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_gradient_reaches_a_derived_table():
    torch.manual_seed(1)
    base = torch.randn(20, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 20, (9,))
    (g1,) = torch.autograd.grad(linear_cross_entropy(h, torch.tanh(base) * 2, y, block_elements=40), base)
    (g2,) = torch.autograd.grad(F.cross_entropy(h @ (torch.tanh(base) * 2).t(), y), base)
    torch.testing.assert_close(g1, g2)


def test_under_autocast_as_recbole_enable_amp():
    """RecBole's trainer wraps the loss in torch.autocast when enable_amp is set."""
    torch.manual_seed(2)
    h = torch.randn(40, 8, requires_grad=True)
    table = torch.randn(50, 8, requires_grad=True)
    y = torch.randint(1, 50, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(h @ torch.eye(8), table, y, block_elements=500)  # bf16 activations
    ours.backward()
    ref_h = h.detach().to(torch.bfloat16).double().requires_grad_()
    ref_t = table.detach().double().requires_grad_()
    F.cross_entropy(ref_h @ ref_t.t(), y).backward()
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(F.cross_entropy(ref_h.detach() @ ref_t.detach().t(), y).item(), rel=1e-5)
    torch.testing.assert_close(table.grad.double(), ref_t.grad, rtol=1e-4, atol=1e-6)
