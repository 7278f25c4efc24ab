"""Mamba4Rec's architecture, initialisation, scoring and training on ml-100k."""

import pytest
import torch
import torch.nn.functional as F

from recbole_hyper.models.mamba4rec import Mamba4Rec
from tests.helpers import dict_config, every_position, prepare, reference_mamba


@pytest.fixture(scope="module")
def ml100k_two_layers():
    return prepare("Mamba4Rec", {"num_layers": 2, "dropout_prob": 0.0})


@pytest.fixture(scope="module")
def ml100k():
    return prepare("Mamba4Rec", {"dropout_prob": 0.0})


def reference_encode(model, item_seq):
    """Mamba4Rec's forward pass from the method description, float64, eval mode."""
    def ln(x, m):
        return F.layer_norm(x, (x.shape[-1],), m.weight.double(), m.bias.double(), m.eps)
    x = ln(model.item_embedding.weight.double()[item_seq], model.LayerNorm)
    for layer in model.mamba_layers:
        h = reference_mamba(layer.mamba, x)
        h = ln(h, layer.LayerNorm) if model.num_layers == 1 else ln(h + x, layer.LayerNorm)
        f = layer.ffn
        inner = F.gelu(h @ f.w_1.weight.double().T + f.w_1.bias.double())
        x = ln(h + inner @ f.w_2.weight.double().T + f.w_2.bias.double(), f.LayerNorm)
    return x


def randomise(model):
    """Give every parameter a non-trivial value so that no term hides behind a zero."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                continue
            p.add_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize("fixture", ["ml100k", "ml100k_two_layers"])
def test_encoder_matches_method_description(fixture, request):
    config, data, train, _, _ = request.getfixturevalue(fixture)
    model = Mamba4Rec(config, train._dataset)
    randomise(model)
    model.eval()
    batch = next(iter(train))
    seq, lens = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        ours = every_position(model, seq, lens).double()
        last = model(seq, lens).double()
    ref = reference_encode(model, seq)[:, : ours.shape[1]]
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(last, ref[torch.arange(len(lens)), lens - 1], rtol=2e-4, atol=2e-4)


def test_mamba4rec_initialisation(ml100k):
    config, data, train, _, _ = ml100k
    model = Mamba4Rec(config, train._dataset)
    block = model.mamba_layers[0].mamba
    for name, p in model.named_parameters():
        if name.endswith(".bias") and "LayerNorm" not in name and "conv1d" not in name:
            assert torch.all(p == 0), name  # includes dt_proj.bias: Mamba's dt init is overridden
    for w in (model.item_embedding.weight, block.in_proj.weight, model.mamba_layers[0].ffn.w_1.weight):
        assert abs(w.std().item() - 0.02) < 0.003
    torch.testing.assert_close(block.A_log.data[0], torch.log(torch.arange(1.0, 5.0)))
    assert torch.all(block.D.data == 1)

    native = Mamba4Rec(dict_config(config, mamba_native_init=True), train._dataset)
    dt = F.softplus(native.mamba_layers[0].mamba.dt_proj.bias)
    assert dt.min() > 0.0009 and dt.max() < 0.1001
    assert abs(native.item_embedding.weight.std().item() - 0.02) < 0.003


def test_scores_are_tied_and_consistent(ml100k):
    config, data, train, _, _ = ml100k
    model = Mamba4Rec(config, train._dataset)
    randomise(model)
    model.eval()
    batch = next(iter(train))[:8]
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        h = model(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        assert full.shape == (8, model.n_items)
        torch.testing.assert_close(full, h @ model.item_embedding.weight.T)
        items = torch.randint(1, model.n_items, (8,))
        batch.update(type(batch)({model.ITEM_ID: items}))
        torch.testing.assert_close(model.predict(batch), full[torch.arange(8), items])


def test_padding_columns_do_not_change_outputs(ml100k):
    config, data, train, _, _ = ml100k
    model = Mamba4Rec(config, train._dataset)
    randomise(model)
    model.eval()
    seq = torch.tensor([[5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0]])
    lens = torch.tensor([3, 2])
    with torch.no_grad():
        padded = model(seq, lens)
        full = every_position(model, seq, lens)
        short = every_position(model, seq[:, :3], lens)
    torch.testing.assert_close(padded, full[torch.arange(2), lens - 1])
    torch.testing.assert_close(full[:, :3], short)


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_a_few_steps_reduce_the_loss(loss_type):
    config, data, train, _, _ = prepare(
        "Mamba4Rec", {"loss_type": loss_type, "dropout_prob": 0.0, "learning_rate": 0.005}
    )
    torch.manual_seed(0)
    model = Mamba4Rec(config, train._dataset)
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    batches = [b for _, b in zip(range(30), train)]
    held = batches[0]
    with torch.no_grad():
        before = model.calculate_loss(held).item()
    model.train()
    for batch in batches[1:]:
        opt.zero_grad()
        model.calculate_loss(batch).backward()
        opt.step()
    with torch.no_grad():
        after = model.calculate_loss(held).item()
    assert after < before - 0.05 * abs(before), (before, after)
