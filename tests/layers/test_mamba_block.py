"""The Mamba block: mamba-ssm's parameterisation, forward function and init."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_hyper.layers.mamba import Mamba
from tests.helpers import reference_mamba


def test_parameter_names_and_shapes_match_mamba_ssm():
    d, N, K, E = 24, 8, 4, 2
    block = Mamba(d_model=d, d_state=N, d_conv=K, expand=E)
    ED, R = E * d, math.ceil(d / 16)
    expected = {
        "in_proj.weight": (2 * ED, d),
        "conv1d.weight": (ED, 1, K),
        "conv1d.bias": (ED,),
        "x_proj.weight": (R + 2 * N, ED),
        "dt_proj.weight": (ED, R),
        "dt_proj.bias": (ED,),
        "A_log": (ED, N),
        "D": (ED,),
        "out_proj.weight": (d, ED),
    }
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == expected


def test_state_dict_round_trip():
    a, b = Mamba(16, d_state=4), Mamba(16, d_state=4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(a(x), b(x))


def test_native_init():
    block = Mamba(32, d_state=6, dt_min=0.001, dt_max=0.1)
    n = torch.arange(1, 7, dtype=torch.float32)
    torch.testing.assert_close(block.A_log.data, torch.log(n).repeat(block.d_inner, 1))
    assert torch.all(block.D.data == 1)
    dt = F.softplus(block.dt_proj.bias.data)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    bound = block.dt_rank**-0.5
    assert block.dt_proj.weight.abs().max() <= bound


@pytest.mark.parametrize("d_model,L,K", [(16, 9, 4), (8, 1, 3), (12, 5, 2)])
def test_forward_matches_reference(d_model, L, K):
    torch.manual_seed(0)
    block = Mamba(d_model, d_state=5, d_conv=K, expand=2, scan_backend="torch").double()
    with torch.no_grad():
        block.conv1d.bias.normal_()
        block.dt_proj.bias.normal_(0, 0.5)
    x = torch.randn(3, L, d_model, dtype=torch.float64)
    torch.testing.assert_close(block(x), reference_mamba(block, x), rtol=1e-9, atol=1e-9)


def test_positions_give_the_gathered_outputs():
    torch.manual_seed(1)
    block = Mamba(16, d_state=4, scan_backend="torch")
    x = torch.randn(4, 10, 16)
    pos = torch.tensor([0, 9, 3, 5])
    full = block(x)
    torch.testing.assert_close(block(x, pos), full[torch.arange(4), pos])


def test_causal():
    torch.manual_seed(2)
    block = Mamba(16, d_state=4)
    x = torch.randn(2, 12, 16)
    y1 = block(x)
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 5, 16)
    y2 = block(x2)
    torch.testing.assert_close(y1[:, :7], y2[:, :7])
    assert not torch.allclose(y1[:, 7:], y2[:, 7:])


def test_different_input_width():
    block = Mamba(16, d_state=4, d_input=17)
    assert block.in_proj.weight.shape == (64, 17)
    assert block(torch.randn(2, 5, 17)).shape == (2, 5, 16)
