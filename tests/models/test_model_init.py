"""The one initialisation routine: RecBole's keys initializer_range and layer_norm_eps reach every model."""

import pytest
import torch
import torch.nn as nn

from recbole_hyper.registry import MODELS, get_model_class
from tests.helpers import tiny


def _build(name, tiny_dataset, **cfg):
    config, _, train, _, _ = tiny(name, tiny_dataset, hidden_size=32, d_state=4, vgae_edges=16, margin_edges=16, **cfg)
    torch.manual_seed(0)
    return get_model_class(name)(config, train._dataset)


@pytest.mark.parametrize("name", list(MODELS))
def test_layer_norm_eps_reaches_every_layer_norm(name, tiny_dataset):
    model = _build(name, tiny_dataset, layer_norm_eps=1e-5)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) >= 2  # the input LayerNorm and one per layer at least
    assert all(m.eps == 1e-5 for m in norms)
    assert all(m.eps == 1e-12 for m in _build(name, tiny_dataset).modules() if isinstance(m, nn.LayerNorm))


@pytest.mark.parametrize("name", list(MODELS))
def test_initializer_range_sets_the_weight_std(name, tiny_dataset):
    extra = {"variant": "half"} if name == "HMamba" else {}
    for std in (0.02, 0.2):
        model = _build(name, tiny_dataset, initializer_range=std, **extra)
        weights = torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, nn.Linear)])
        assert weights.std().item() == pytest.approx(std, rel=0.05)
        biases = [m.bias for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None]
        assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_hmamba_full_keeps_the_codes_init(tiny_dataset):
    """Full: PyTorch's default Linear init and a xavier-uniform item table, whatever initializer_range says."""
    a = _build("HMamba", tiny_dataset, initializer_range=0.02)
    b = _build("HMamba", tiny_dataset, initializer_range=0.5)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    n_items, d = a.item_embedding.weight.shape
    bound = (6.0 / (n_items + d)) ** 0.5
    assert a.item_embedding.weight.abs().max() <= bound
