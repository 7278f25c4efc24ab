"""The mixture-of-experts layer and HyMoERec."""

import logging

import pytest
import torch
import torch.nn.functional as F

from recbole_hyper.config.params import HyperParameterError
from recbole_hyper.layers.moe import MoEFeedForward
from recbole_hyper.models.hymoerec import HyMoERec
from tests.helpers import every_position, prepare


def make_layer(**kw):
    torch.manual_seed(0)
    args = dict(d_model=8, inner_size=16, dropout=0.0, n_experts=4, top_k=2)
    args.update(kw)
    return MoEFeedForward(**args)


def test_routing_picks_k_experts_with_gates_summing_to_one():
    layer = make_layer(n_experts=5, top_k=3)
    x = torch.randn(40, 8)
    probs, idx, gates = layer.route(x)
    assert idx.shape == (40, 3) and gates.shape == (40, 3)
    assert all(len(set(row.tolist())) == 3 for row in idx)
    torch.testing.assert_close(gates.sum(-1), torch.ones(40))
    torch.testing.assert_close(probs.sum(-1), torch.ones(40))
    # The kept experts are those with the largest router logits, and the
    # gates are the softmax over just those logits.
    logits = layer.router(x)
    for t in range(40):
        best = sorted(range(5), key=lambda e: -logits[t, e].item())[:3]
        assert set(idx[t].tolist()) == set(best)
        kept = logits[t, idx[t]]
        torch.testing.assert_close(gates[t], torch.exp(kept) / torch.exp(kept).sum())


def reference_layer(layer, x):
    """The layer's output from its definition, token by token."""
    ln = layer.LayerNorm
    outs = []
    logits = layer.router(x)
    alpha = torch.sigmoid(layer.alpha_param) * min(1.0, layer.num_steps.item() / layer.warmup_steps)
    for t in range(x.shape[0]):
        top = logits[t].topk(layer.top_k).indices
        g = torch.softmax(logits[t, top], -1)
        y_moe = sum(g[i] * layer.experts[e](x[t]) for i, e in enumerate(top.tolist()))
        y = layer.shared(x[t]) + alpha * y_moe
        outs.append(F.layer_norm(x[t] + y, (x.shape[-1],), ln.weight, ln.bias, ln.eps))
    return torch.stack(outs)


def dense_ffn(layer, x):
    f = layer.shared
    ln = layer.LayerNorm
    y = f.w_2(F.gelu(f.w_1(x)))
    return F.layer_norm(x + y, (x.shape[-1],), ln.weight, ln.bias, ln.eps)


def test_output_matches_definition_and_alpha_zero_is_dense():
    layer = make_layer().eval()
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        layer.alpha_param.fill_(0.7)
        layer.num_steps.fill_(200)  # ramp 0.4
        torch.testing.assert_close(layer(x).reshape(12, 8), reference_layer(layer, x.reshape(12, 8)))
        assert not torch.allclose(layer(x), dense_ffn(layer, x), atol=1e-4)  # experts contribute
        layer.num_steps.fill_(0)  # alpha = 0 at the start of training
        torch.testing.assert_close(layer(x), dense_ffn(layer, x))


def test_balance_term_hand_computation_and_padding_ignored():
    layer = make_layer(lambda_lb=0.5).train()
    x = torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    layer(x, mask)
    logits = layer.router(x.reshape(-1, 8))
    real = mask.reshape(-1)
    p = torch.exp(logits[real]) / torch.exp(logits[real]).sum(-1, keepdim=True)
    gbar = p.mean(0)
    expected = 0.5 * sum(gbar[e] * torch.log(gbar[e]) for e in range(4))
    torch.testing.assert_close(layer.balance_loss, expected)
    counts = layer.load_counts.clone()
    assert counts.sum() == real.sum() * 2

    # Different padding tokens: same statistics.
    layer.reset_load()
    x2 = x.clone()
    x2[0, 3] = torch.randn(8) * 50
    x2[1, 2:] = torch.randn(2, 8) * 50
    layer(x2, mask)
    torch.testing.assert_close(layer.balance_loss, expected)
    assert torch.equal(layer.load_counts, counts)


def test_gradients_reach_chosen_experts_only():
    layer = make_layer(n_experts=4, top_k=1, shared_expert=False, lambda_lb=0.0).train()
    x = torch.randn(30, 8)
    _, idx, _ = layer.route(x)
    chosen = set(idx.reshape(-1).tolist())
    layer(x).pow(2).sum().backward()
    for e, expert in enumerate(layer.experts):
        g = expert.w_1.weight.grad
        if e in chosen:
            assert g is not None and g.abs().sum() > 0, e
        else:
            assert g is None or g.abs().sum() == 0, e


def test_step_counter_ramps_and_is_frozen_in_eval():
    layer = make_layer(warmup_steps=4).train()
    x = torch.randn(3, 8)
    for step in range(6):
        layer(x)
    assert layer.num_steps.item() == 6
    assert layer.fusion_weight().item() == pytest.approx(torch.sigmoid(torch.tensor(0.0)).item())
    layer.eval()
    with torch.no_grad():
        layer(x)
    assert layer.num_steps.item() == 6
    state = layer.state_dict()
    assert "num_steps" in state
    fresh = make_layer(warmup_steps=4)
    fresh.load_state_dict(state)
    assert fresh.num_steps.item() == 6


@pytest.mark.parametrize(
    "override,expected",
    [
        ({"top_k": 5}, "must not exceed n_experts"),
        ({"n_experts": 0}, "n_experts"),
        ({"moe_warmup_steps": -1}, "moe_warmup_steps"),
    ],
)
def test_invalid_settings_fail_at_build(override, expected, in_tmp):
    from recbole_hyper.config import PluginConfig

    with pytest.raises(HyperParameterError, match=expected):
        PluginConfig(model="HyMoERec", dataset="ml-100k", config_dict=override)
    with pytest.raises(ValueError, match=expected.split()[0]):
        MoEFeedForward(8, 16, 0.0, **{
            "top_k": override.get("top_k", 2),
            "n_experts": override.get("n_experts", 4),
            "warmup_steps": override.get("moe_warmup_steps", 500),
        })


@pytest.fixture(scope="module")
def hymoe_data():
    return prepare("HyMoERec", {"dropout_prob": 0.0, "moe_warmup_steps": 10})


@pytest.mark.slow
def test_hymoerec_training_reduces_loss_and_counts_steps(hymoe_data):
    config, data, train, _, _ = hymoe_data
    torch.manual_seed(0)
    model = HyMoERec(config, train._dataset)
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    batches = [b for _, b in zip(range(25), train)]
    held = batches[0]
    model.eval()
    with torch.no_grad():
        before = model.calculate_loss(held)
    assert isinstance(before, torch.Tensor)  # no balance term in eval
    model.train()
    for batch in batches[1:]:
        opt.zero_grad()
        losses = model.calculate_loss(batch)
        assert isinstance(losses, tuple) and len(losses) == 2  # CE and the balance term
        sum(losses).backward()
        opt.step()
    assert model.moe_layers()[0].num_steps.item() == 24
    model.eval()
    with torch.no_grad():
        after = model.calculate_loss(held)
    assert after.item() < before.item() * 0.95


def test_positions_path_keeps_full_sequence_statistics(hymoe_data):
    """The balance term averages over every token even though the loss reads one position."""
    config, data, train, _, _ = hymoe_data
    torch.manual_seed(1)
    model = HyMoERec(config, train._dataset).train()
    batch = next(iter(train))
    seq, lens = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    moe = model.moe_layers()[0]
    moe.num_steps.fill_(5)  # each training forward advances the counter
    last = model(seq, lens)
    aux_fast = model.extra_losses()["load_balance_0"]
    moe.num_steps.fill_(5)
    full = every_position(model, seq, lens)
    aux_full = model.extra_losses()["load_balance_0"]
    torch.testing.assert_close(aux_fast, aux_full)
    torch.testing.assert_close(last, full[torch.arange(len(lens)), lens - 1])


@pytest.mark.slow
def test_trainer_logs_expert_load_and_checkpoint_keeps_step(in_tmp, caplog):
    from recbole.utils import init_logger

    import recbole_hyper
    from recbole_hyper.training.trainer import PluginTrainer

    config, data, train, valid, test = prepare(
        "HyMoERec", {"epochs": 1, "checkpoint_dir": str(in_tmp), "state": "INFO"}
    )
    init_logger(config)
    logging.getLogger().addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    model = HyMoERec(config, train._dataset)
    trainer = PluginTrainer(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    assert any("expert load" in r.getMessage() for r in caplog.records)
    steps = model.moe_layers()[0].num_steps.item()
    assert steps == len(train)
    restored = HyMoERec(config, train._dataset)
    restored.load_state_dict(recbole_hyper.load_checkpoint(trainer.saved_model_file)["state_dict"])
    assert restored.moe_layers()[0].num_steps.item() == steps
    logging.getLogger().removeHandler(caplog.handler)
