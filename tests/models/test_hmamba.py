"""HMamba: Lorentz operations, both variants, numerics and the Poincare plot."""

import math
import subprocess
import sys
from pathlib import Path

import geoopt
import pytest
import torch

from recbole_hyper.layers.lorentz import Lorentz
from recbole_hyper.models.hmamba import HMamba
from tests.helpers import dict_config, prepare

REPO = Path(__file__).resolve().parents[2]


def hand_point(v, K):
    """exp_o((0, v)) from the closed form, float64 lists."""
    r = math.sqrt(sum(x * x for x in v))
    sk = math.sqrt(K)
    if r == 0:
        return [sk] + [0.0] * len(v)
    return [sk * math.cosh(r / sk)] + [sk * math.sinh(r / sk) * x / r for x in v]


def hand_dist(x, y, K):
    minkowski = -x[0] * y[0] + sum(a * b for a, b in zip(x[1:], y[1:]))
    return math.sqrt(K) * math.acosh(max(1.0, -minkowski / K))


@pytest.mark.parametrize("K", [1.0, 2.5])
def test_expmap_and_distances_match_hand_computation(K):
    torch.manual_seed(0)
    lor = Lorentz(K).double()
    v = torch.randn(6, 4, dtype=torch.float64) * torch.tensor([[0.1], [0.5], [1.0], [2.0], [3.0], [0.01]], dtype=torch.float64)
    x = lor.expmap0(v)
    for row, point in zip(v.tolist(), x.tolist()):
        assert point == pytest.approx(hand_point(row, K), rel=1e-10, abs=1e-12)
    y = lor.expmap0(torch.randn(5, 4, dtype=torch.float64))
    d_all = lor.dist_from_neg_inner(lor.neg_inner_all(x, y))
    for i in range(6):
        for j in range(5):
            assert d_all[i, j].item() == pytest.approx(hand_dist(x[i].tolist(), y[j].tolist(), K), rel=1e-9, abs=1e-6)
    # geoopt's own distance agrees on the matching pairs.
    torch.testing.assert_close(lor.dist(x[:5], y), torch.diagonal(d_all[:5]), rtol=1e-9, atol=1e-6)
    # log_o inverts exp_o.
    torch.testing.assert_close(lor.logmap0(x)[:, 1:], v, rtol=1e-8, atol=1e-8)


def test_points_lie_on_the_manifold():
    lor = Lorentz(1.7).double()
    manifold = geoopt.Lorentz(k=torch.tensor(1.7, dtype=torch.float64))
    v = torch.randn(50, 8, dtype=torch.float64) * 2
    manifold.assert_check_point_on_manifold(lor.expmap0(v))
    manifold.assert_check_point_on_manifold(lor.lift(torch.randn(50, 8, dtype=torch.float64) * 3))
    lor32 = Lorentz(1.0)
    manifold32 = geoopt.Lorentz(k=1.0)
    manifold32.assert_check_point_on_manifold(lor32.expmap0(torch.randn(50, 8) * 0.5), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def hm_data():
    return prepare("HMamba", {"dropout_prob": 0.0})


def build(config, train, **overrides):
    torch.manual_seed(0)
    return HMamba(dict_config(config, **overrides), train._dataset)


def batch_of(train, n=16):
    return next(iter(train))[:n]


def test_full_and_half_score_differently_on_the_same_weights(hm_data):
    config, _, train, _, _ = hm_data
    full = build(config, train, variant="full")
    half = build(config, train, variant="half")
    half.load_state_dict(full.state_dict())
    full.eval(), half.eval()
    batch = batch_of(train)
    with torch.no_grad():
        s_full, s_half = full.full_sort_predict(batch), half.full_sort_predict(batch)
    assert s_full.shape == s_half.shape == (16, full.n_items)
    assert not torch.allclose(s_full, s_half)
    assert s_full.max() <= -2.0 + 1e-5  # the code's score -2 - 2 d^2 is bounded above by -2


@pytest.mark.parametrize("variant,score", [("full", "sqdist"), ("full", "dist"), ("half", "sqdist")])
def test_full_sort_matches_per_item_scores(hm_data, variant, score):
    config, _, train, _, _ = hm_data
    model = build(config, train, variant=variant, score=score).eval()
    batch = batch_of(train, 6)
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        items = torch.randint(1, model.n_items, (6,))
        batch.update(type(batch)({model.ITEM_ID: items}))
        torch.testing.assert_close(model.predict(batch), full[torch.arange(6), items], rtol=1e-5, atol=1e-5)


def test_paper_score_is_minus_twice_the_distance(hm_data):
    config, _, train, _, _ = hm_data
    model = build(config, train, score="dist", curvature=2.0).double().eval()
    batch = batch_of(train, 4)
    with torch.no_grad():
        u = model(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        scores = model.full_sort_predict(batch)
        points = model.item_points()
    for b in range(4):
        for v in (1, 7, 50):
            expected = -2 * hand_dist(u[b].tolist(), points[v].tolist(), 2.0)
            assert scores[b, v].item() == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_curvature_aware_A_is_the_identity_at_K_1(hm_data):
    config, _, train, _, _ = hm_data
    batch = batch_of(train, 8)
    out = {}
    for K in (1.0, 2.0):
        base = build(config, train, curvature=K, curvature_aware_A=False).eval()
        aware = build(config, train, curvature=K, curvature_aware_A=True).eval()
        aware.load_state_dict(base.state_dict())
        with torch.no_grad():
            out[K] = (base.full_sort_predict(batch), aware.full_sort_predict(batch))
    torch.testing.assert_close(out[1.0][0], out[1.0][1])
    assert not torch.allclose(out[2.0][0], out[2.0][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant,score", [("full", "sqdist"), ("full", "dist"), ("half", "sqdist")])
def test_extreme_embedding_norms_stay_finite(hm_data, dtype, variant, score):
    config, _, train, _, _ = hm_data
    model = build(config, train, variant=variant, score=score, learn_curvature=True).to(dtype).train()
    norms = torch.logspace(-8, math.log10(50), model.n_items - 1, dtype=dtype)
    with torch.no_grad():
        w = torch.randn(model.n_items - 1, model.hidden_size, dtype=dtype)
        model.item_embedding.weight[1:] = w / w.norm(dim=1, keepdim=True) * norms[:, None]
    batch = batch_of(train, 32)
    losses = model.calculate_loss(batch)
    total = sum(losses) if isinstance(losses, tuple) else losses
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        model.eval()
        assert torch.isfinite(model.full_sort_predict(batch)).all()


def test_norm_regulariser_is_added_for_full_only(hm_data):
    config, _, train, _, _ = hm_data
    batch = batch_of(train, 8)
    full = build(config, train, variant="full").train()
    losses = full.calculate_loss(batch)
    assert isinstance(losses, tuple) and len(losses) == 2
    x = full.lorentz.expmap0(full.item_embedding(batch[full.ITEM_SEQ]))
    torch.testing.assert_close(losses[1], x.norm(dim=-1).mean())
    half = build(config, train, variant="half").train()
    assert isinstance(half.calculate_loss(batch), torch.Tensor)


@pytest.mark.parametrize("variant", ["full", "half"])
def test_a_few_steps_reduce_the_loss(hm_data, variant):
    config, _, train, _, _ = hm_data
    model = build(config, train, variant=variant)
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    batches = [b for _, b in zip(range(30), train)]
    held = batches[0]

    def ce(b):
        model.eval()
        with torch.no_grad():
            out = model.calculate_loss(b)
        model.train()
        return (out[0] if isinstance(out, tuple) else out).item()

    before = ce(held)
    for b in batches[1:]:
        opt.zero_grad()
        out = model.calculate_loss(b)
        (sum(out) if isinstance(out, tuple) else out).backward()
        opt.step()
    assert ce(held) < before * 0.97


@pytest.mark.slow
def test_poincare_plot_from_a_checkpoint(in_tmp):
    from recbole_hyper.training.trainer import PluginTrainer

    config, _, train, valid, _ = prepare("HMamba", {"epochs": 1, "checkpoint_dir": str(in_tmp)})
    trainer = PluginTrainer(config, HMamba(config, train._dataset))
    trainer.fit(train, valid, saved=True, show_progress=False)
    out = in_tmp / "items.png"
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_hyper.cli", "plot", trainer.saved_model_file, "--out", str(out)],
        cwd=in_tmp,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    from recbole_hyper.serving.plot import poincare_disk_coordinates

    xy = poincare_disk_coordinates(trainer.model)
    assert xy.shape == (trainer.model.n_items - 1, 2)
    assert (xy**2).sum(1).max() < 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exp_map_gradients_stay_finite_down_to_zero_tangent_norm(dtype):
    """An embedding row shrunk to (almost) zero, e.g. an isolated graph node, must not turn
    the gradients into NaN; near the origin exp_o's spatial part is the identity (K = 1)."""
    lor = Lorentz(curvature=1.0, max_tangent_norm=15.0)
    direction = torch.randn(4, 6, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    for norm in [0.0, 1e-30, 1e-21, 1e-12, 1e-8]:
        v = (direction * norm).to(dtype).requires_grad_()
        x = lor.expmap0(v)
        x[:, 1:].sum().backward()
        assert torch.isfinite(v.grad).all(), f"non-finite gradient at tangent norm {norm}"
        # d sinh(|v|) v/|v| / dv -> identity as |v| -> 0, so each gradient entry is 1.
        torch.testing.assert_close(v.grad, torch.ones_like(v.grad), rtol=1e-5, atol=1e-5)
    # Beyond max_tangent_norm the point is clipped to distance 15 from the origin: x_0 = cosh(15).
    v = (direction * 50.0).to(dtype)
    assert lor.expmap0(v)[:, 0].double().tolist() == pytest.approx([math.cosh(15.0)] * 4, rel=1e-5)


def test_log_map_has_no_norm_cap():
    """Unlike the released code (norm capped at 10), log_o inverts exp_o at spatial norms >> 10."""
    lor = Lorentz(1.0).double()
    v = torch.randn(8, 6, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True) * torch.linspace(0.5, 14.0, 8, dtype=torch.float64)[:, None]
    x = lor.expmap0(v)
    assert x[-1, 1:].norm() > 1e5
    torch.testing.assert_close(lor.logmap0(x)[:, 1:], v, rtol=1e-9, atol=1e-9)


def test_half_paper_form_is_algorithm_1(hm_data):
    """Half in the paper's form: LayerNorm(E), standard Mamba, dot product - Mamba4Rec's computation."""
    from recbole_hyper.models.mamba4rec import Mamba4Rec

    config, data, train = hm_data[:3]
    paper = build(config, train, variant="half", half_form="paper").eval()
    code = build(config, train, variant="half", half_form="code").eval()
    d = paper.hidden_size
    assert paper.LayerNorm.normalized_shape == (d,) and code.LayerNorm.normalized_shape == (d + 1,)
    reference = Mamba4Rec(dict_config(config, dropout_prob=paper.dropout_prob), train._dataset).eval()
    missing, unexpected = reference.load_state_dict(paper.state_dict(), strict=False)
    assert missing == [] and unexpected == ["lorentz.log_k"]
    batch = batch_of(train)
    with torch.no_grad():
        expected = reference.full_sort_predict(batch)
        torch.testing.assert_close(paper.full_sort_predict(batch), expected)
        # The code's form (exp map, LayerNorm over d+1, log map) scores differently.
        assert code.full_sort_predict(batch).shape == expected.shape
        assert not torch.allclose(code.full_sort_predict(batch), expected)
