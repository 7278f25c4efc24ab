"""HM2Rec's graph encoder: hyperbolic vs Euclidean, Lorentz distances, curvature, VGAE switches, optimiser."""

import copy
import math

import geoopt
import pytest
import torch

from recbole_hyper.layers.graph import VGAE, fermi_dirac_logits
from recbole_hyper.models.hm2rec import HM2Rec
from recbole_hyper.training.optim import JointOptimizer, build_optimizer
from tests.helpers import tiny

SMALL = dict(hidden_size=8, d_state=4, vgae_edges=16, margin_edges=16, dropout_prob=0.0)


def _model(tiny_dataset, seed=0, **cfg):
    config, _, train, _, _ = tiny("HM2Rec", tiny_dataset, **{**SMALL, **cfg})
    torch.manual_seed(seed)
    return config, HM2Rec(config, train._dataset), train


def _trained_scores(tiny_dataset, steps=5, dtype=torch.float32, **cfg):
    """Full-ranking scores of the training batch after ``steps`` optimiser steps (seeded)."""
    config, model, train = _model(tiny_dataset, **cfg)
    model = model.to(dtype)
    opt = build_optimizer(model, lambda params: torch.optim.Adam(params, lr=0.05), 0.05)
    batch = next(iter(train))
    torch.manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model.full_sort_predict(batch), model


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_hyperbolic_points_are_manifold_parameters_with_riemannian_adam(tiny_dataset):
    config, model, _ = _model(tiny_dataset)
    assert isinstance(model.graph.weight, geoopt.ManifoldParameter)
    assert model.graph.weight.shape[1] == model.hidden_size + 1
    opt = build_optimizer(model, lambda params: torch.optim.Adam(params, lr=0.01), 0.01)
    assert isinstance(opt, JointOptimizer)
    assert type(opt.optimizers[0]) is torch.optim.Adam
    assert isinstance(opt.optimizers[1], geoopt.optim.RiemannianAdam)
    riemannian_params = {id(p) for g in opt.optimizers[1].param_groups for p in g["params"]}
    assert riemannian_params == {id(model.graph.weight)}
    # Euclidean: a plain parameter and the configured optimiser alone.
    _, euclid, _ = _model(tiny_dataset, use_hyperbolic=False)
    assert not isinstance(euclid.graph.weight, geoopt.ManifoldParameter)
    assert euclid.graph.weight.shape[1] == euclid.hidden_size
    assert type(build_optimizer(euclid, lambda params: torch.optim.Adam(params, lr=0.01), 0.01)) is torch.optim.Adam


def test_hyperbolic_and_euclidean_settings_learn_different_models(tiny_dataset):
    # Same seed, same init (log_o(exp_o(v)) = v), so the two start from the same outputs ...
    _, hyp, train = _model(tiny_dataset)
    _, euc, _ = _model(tiny_dataset, use_hyperbolic=False)
    batch = next(iter(train))
    hyp.eval(), euc.eval()
    with torch.no_grad():
        assert _rel(hyp.full_sort_predict(batch), euc.full_sort_predict(batch)) < 1e-5
    # ... and the geometry (distances in the loss, the Riemannian optimiser) makes them differ.
    h, _ = _trained_scores(tiny_dataset)
    e, _ = _trained_scores(tiny_dataset, use_hyperbolic=False)
    assert _rel(h, e) > 1e-2


def test_points_stay_on_the_hyperboloid_after_training(tiny_dataset):
    _, model = _trained_scores(tiny_dataset, steps=8, curvature=2.0, dtype=torch.float64)
    x = model.graph.weight.detach()
    quad = -x[:, 0] ** 2 + (x[:, 1:] ** 2).sum(-1)
    torch.testing.assert_close(quad, torch.full_like(quad, -2.0), rtol=1e-9, atol=1e-9)


def test_loss_distances_equal_a_hand_written_lorentz_distance(tiny_dataset):
    config, model, _ = _model(tiny_dataset, curvature=2.0)
    model = model.double().train()
    points, _ = model.graph(model.adjacency())
    users, pos, neg = model.sample_triples(12)
    got = model.node_sqdist(points, users, pos)
    K = 2.0
    for b in range(12):
        x, y = points[users[b]].tolist(), points[model.n_users + pos[b]].tolist()
        minkowski = -x[0] * y[0] + sum(a * c for a, c in zip(x[1:], y[1:]))
        d = math.sqrt(K) * math.acosh(max(1.0, -minkowski / K))
        assert got[b].item() == pytest.approx(d * d, rel=1e-9, abs=1e-12)
    # The margin loss the model adds is HGCF's hinge on those distances.
    sq_neg = model.node_sqdist(points, users, neg)
    hinge = [max(0.0, got[b].item() - sq_neg[b].item() + model.margin) for b in range(12)]
    assert model.margin_loss(points, users, pos, neg).item() == pytest.approx(sum(hinge) / 12, rel=1e-9)
    # Euclidean: the squared Euclidean distance.
    _, euc, _ = _model(tiny_dataset, use_hyperbolic=False)
    euc = euc.double()
    p2, _ = euc.graph(euc.adjacency())
    manual = ((p2[users] - p2[euc.n_users + pos]) ** 2).sum(-1)
    torch.testing.assert_close(euc.node_sqdist(p2, users, pos), manual)


def test_negative_triples_avoid_the_users_items(tiny_dataset):
    _, model, _ = _model(tiny_dataset)
    users, pos, neg = model.sample_triples(500)
    edges = {tuple(e) for e in model.edges.tolist()}
    assert all((u, i) in edges for u, i in zip(users.tolist(), pos.tolist()))
    assert not any((u, j) in edges for u, j in zip(users.tolist(), neg.tolist()))


def test_fermi_dirac_decoder_by_hand(tiny_dataset):
    sq = torch.tensor([0.0, 1.0, 2.0, 5.0], dtype=torch.float64)
    p = torch.sigmoid(fermi_dirac_logits(sq, r=2.0, t=0.5))
    expected = [1.0 / (math.exp((s - 2.0) / 0.5) + 1.0) for s in sq.tolist()]
    torch.testing.assert_close(p, torch.tensor(expected, dtype=torch.float64))
    # The model's link logits use the geometry's distance of the mapped codes.
    _, model, _ = _model(tiny_dataset, fd_r=1.5, fd_t=0.7)
    model = model.double()
    z = torch.randn(model.n_users + model.n_items, model.hidden_size, dtype=torch.float64) * 0.3
    pairs = torch.tensor([[1, 2], [2, 3]])
    lor = model.lorentz
    for (u, i), logit in zip(pairs.tolist(), model.link_logits(z, pairs).tolist()):
        x, y = lor.expmap0(z[u]).tolist(), lor.expmap0(z[model.n_users + i]).tolist()
        d = math.acosh(-(-x[0] * y[0] + sum(a * c for a, c in zip(x[1:], y[1:]))))
        assert logit == pytest.approx((1.5 - d * d) / 0.7, rel=1e-9)
    _, ip, _ = _model(tiny_dataset, vgae_decoder="inner_product")
    torch.testing.assert_close(
        ip.double().link_logits(z, pairs), (z[pairs[:, 0]] * z[ip.n_users + pairs[:, 1]]).sum(-1)
    )


def test_curvature_is_a_real_knob(tiny_dataset):
    scores = {K: _trained_scores(tiny_dataset, curvature=K)[0] for K in (0.5, 1.0, 2.0)}
    assert _rel(scores[0.5], scores[1.0]) > 1e-3
    assert _rel(scores[2.0], scores[1.0]) > 1e-3
    assert _rel(scores[0.5], scores[2.0]) > 1e-3


def test_learned_curvature_moves_and_stays_finite(tiny_dataset):
    scores, model = _trained_scores(tiny_dataset, steps=8, learn_curvature=True)
    assert model.lorentz.log_k.requires_grad
    assert abs(model.lorentz.k.item() - 1.0) > 1e-4
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_curvatures_and_norms_stay_finite(tiny_dataset, dtype):
    for K in (1e-3, 1e3):
        _, model, train = _model(tiny_dataset, curvature=K)
        model = model.to(dtype).train()
        n = model.graph.weight.shape[0]
        with torch.no_grad():
            w = torch.randn(n, model.hidden_size, dtype=dtype)
            norms = torch.logspace(-8, math.log10(40), n, dtype=dtype)[:, None]
            model.graph.weight.copy_(model.lorentz.expmap0(w / w.norm(dim=1, keepdim=True) * norms))
        total = sum(model.calculate_loss(next(iter(train))))
        assert torch.isfinite(total)
        total.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), (K, name)


def test_kl_scale_switch():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0], [1.5, 0.25]], dtype=torch.float64)
    log_sigma = torch.tensor([[0.1, -0.3], [0.0, 0.5], [-1.0, 0.2]], dtype=torch.float64)
    per_node = []
    for i in range(3):
        total = 0.0
        for j in range(2):
            m, s = mu[i, j].item(), math.exp(log_sigma[i, j].item())
            total += 0.5 * (s * s + m * m - 1.0 - 2.0 * math.log(s))
        per_node.append(total)
    assert VGAE.kl(mu, log_sigma, "node_mean").item() == pytest.approx(sum(per_node) / 3, rel=1e-12)
    # Kipf & Welling's code: (0.5 / N) * mean over nodes of the sum over dimensions.
    assert VGAE.kl(mu, log_sigma, "kipf").item() == pytest.approx(sum(per_node) / 3 / 3, rel=1e-12)


def test_vgae_kl_scale_changes_the_model_loss(tiny_dataset):
    losses = {}
    for scale in ("node_mean", "kipf"):
        _, model, train = _model(tiny_dataset, vgae_kl_scale=scale, graph_loss="none")
        torch.manual_seed(3)
        losses[scale] = model.calculate_loss(next(iter(train)))[1].item()
    assert losses["kipf"] < losses["node_mean"]


def test_vgae_fusion_mean_is_deterministic_in_training(tiny_dataset):
    for fusion, deterministic in (("mean", True), ("sample", False)):
        _, model, _ = _model(tiny_dataset, vgae_fusion=fusion)
        model.train()
        a = model.graph_item_embeddings().detach()
        b = model.graph_item_embeddings().detach()
        assert torch.equal(a, b) == deterministic, fusion
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model.graph_item_embeddings(), model.graph_item_embeddings())


def test_vgae_fusion_residual_adds_the_propagated_embeddings(tiny_dataset):
    _, model, _ = _model(tiny_dataset, vgae_fusion="residual")
    model.eval()
    with torch.no_grad():
        adjacency = model.adjacency()
        _, tangent = model.graph(adjacency)
        mu, _ = model.vgae.encode(adjacency, tangent)
        expected = (tangent + mu)[model.n_users :]
        torch.testing.assert_close(model.graph_item_embeddings(), expected)
        _, mean_model, _ = _model(tiny_dataset, vgae_fusion="mean")
        torch.testing.assert_close(mean_model.eval().graph_item_embeddings(), mu[model.n_users :])


def test_graph_loss_switch(tiny_dataset):
    _, with_margin, train = _model(tiny_dataset, use_vgae=False)
    _, without, _ = _model(tiny_dataset, use_vgae=False, graph_loss="none")
    batch = next(iter(train))
    out = with_margin.calculate_loss(batch)
    assert isinstance(out, tuple) and out[1].item() > 0
    assert not isinstance(without.calculate_loss(batch), tuple)


def test_joint_optimizer_checkpoint_round_trip(tiny_dataset):
    _, model, train = _model(tiny_dataset)
    make = lambda m: build_optimizer(m, lambda params: torch.optim.Adam(params, lr=0.05), 0.05)  # noqa: E731
    opt = make(model)
    batch = next(iter(train))
    for _ in range(2):
        opt.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        opt.step()
    state = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})  # as a checkpoint file
    _, other, _ = _model(tiny_dataset, seed=5)
    other.load_state_dict(state["model"])
    opt2 = make(other)
    opt2.load_state_dict(state["opt"])
    for m, o in ((model, opt), (other, opt2)):
        torch.manual_seed(9)
        o.zero_grad()
        sum(m.calculate_loss(batch)).backward()
        o.step()
    torch.testing.assert_close(other.graph.weight, model.graph.weight)
    with pytest.raises(ValueError, match="different set of optimizers"):
        opt2.load_state_dict({"optimizers": [state["opt"]["optimizers"][0]]})


def test_riemannian_adam_continues_exactly_after_a_reload():
    """Steps after state_dict -> torch.save -> load_state_dict equal the steps without the reload."""
    import io

    from recbole_hyper.layers.lorentz import Lorentz

    lorentz = Lorentz(1.0)

    def make():
        torch.manual_seed(0)
        module = torch.nn.Module()
        module.p = geoopt.ManifoldParameter(lorentz.expmap0(torch.randn(50, 4) * 0.3).detach(), manifold=lorentz.manifold)
        module.w = torch.nn.Parameter(torch.randn(5, 5))
        return module, build_optimizer(module, lambda params: torch.optim.Adam(params, lr=0.01), 0.01)

    def step(module, opt, i):
        opt.zero_grad()
        ((module.p @ module.w).sin().sum() * (1.0 + i)).backward()
        opt.step()

    straight, opt = make()
    for i in range(5):
        step(straight, opt, i)
    buffer = io.BytesIO()
    torch.save({"model": straight.state_dict(), "opt": opt.state_dict()}, buffer)
    for i in range(5, 10):
        step(straight, opt, i)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    resumed, opt2 = make()
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    for i in range(5, 10):
        step(resumed, opt2, i)
    assert torch.equal(resumed.p, straight.p) and torch.equal(resumed.w, straight.w)


def test_lorentz_maps_round_the_same_on_every_call():
    """geoopt's TorchScript functions: the first (profiled) call and later (optimised) ones
    must give bit-identical gradients, or a process's history changes training."""
    from recbole_hyper.layers.lorentz import Lorentz

    lorentz = Lorentz(1.0)
    torch.manual_seed(0)
    points = lorentz.expmap0(torch.randn(300, 16) * 0.5).detach()
    upstream = torch.randn(300, 16)
    grads = []
    for _ in range(4):
        x = points.clone().requires_grad_()
        lorentz.logmap0(lorentz.manifold.projx(x))[..., 1:].backward(upstream)
        grads.append(x.grad)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_tangent_parameters_are_the_same_model_with_plain_parameters(tiny_dataset):
    """graph_parameters: tangent stores log_o of each point; given the same points, the model
    computes the same item table, VGAE input and loss distances, with the configured optimiser."""
    _, points_model, train = _model(tiny_dataset, curvature=2.0)
    _, tangent_model, _ = _model(tiny_dataset, curvature=2.0, graph_parameters="tangent")
    points_model, tangent_model = points_model.double().train(), tangent_model.double().train()
    w = tangent_model.graph.weight
    assert type(w) is torch.nn.Parameter and w.shape == (tangent_model.n_users + tangent_model.n_items, 8)
    assert type(build_optimizer(tangent_model, lambda ps: torch.optim.Adam(ps, lr=0.01), 0.01)) is torch.optim.Adam
    state = dict(points_model.state_dict())
    x = points_model.lorentz.manifold.projx(points_model.graph.weight.detach())  # exactly on the float64 hyperboloid
    state["graph.weight"] = points_model.lorentz.logmap0(x)[:, 1:]
    tangent_model.load_state_dict(state)

    adjacency = points_model.adjacency()
    p_points, p_tangent = points_model.graph(adjacency)
    t_points, t_tangent = tangent_model.graph(adjacency)
    torch.testing.assert_close(t_tangent, p_tangent, rtol=1e-9, atol=1e-12)
    users, pos, neg = points_model.sample_triples(12)
    for items in (pos, neg):
        torch.testing.assert_close(
            tangent_model.node_sqdist(t_points, users, items), points_model.node_sqdist(p_points, users, items),
            rtol=1e-9, atol=1e-12,
        )
    # The lazily mapped rows are points of the hyperboloid of K = 2.
    x = t_points[users]
    torch.testing.assert_close(-x[:, 0] ** 2 + (x[:, 1:] ** 2).sum(-1), torch.full((12,), -2.0, dtype=x.dtype))
    points_model.eval(), tangent_model.eval()
    with torch.no_grad():
        batch = next(iter(train))
        torch.testing.assert_close(tangent_model.full_sort_predict(batch), points_model.full_sort_predict(batch),
                                   rtol=1e-9, atol=1e-9)
    # Trained, the two parameterisations (Euclidean Adam on v vs Riemannian Adam on x) differ.
    m, _ = _trained_scores(tiny_dataset)
    t, _ = _trained_scores(tiny_dataset, graph_parameters="tangent")
    assert _rel(m, t) > 1e-3
