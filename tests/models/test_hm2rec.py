"""HM2Rec: training graph, propagation, VGAE, RoPE-Mamba, ablations, runner and checkpoints."""

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_hyper.layers.graph import VGAE, GraphEncoder, normalized_adjacency
from recbole_hyper.layers.lorentz import Lorentz
from recbole_hyper.layers.mamba import Mamba
from recbole_hyper.layers.rope import RoPEMamba, rotate_pairs
from recbole_hyper.models.hm2rec import HM2Rec
from recbole_hyper.training.optim import build_optimizer
from tests.helpers import fast_config, prepare, tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ml100k():
    return prepare("HM2Rec", {"dropout_prob": 0.0})


def test_graph_holds_training_interactions_only(ml100k):
    config, data, train, valid, test = ml100k
    model = HM2Rec(config, train._dataset)
    edges = {tuple(e) for e in model.edges.tolist()}
    # The training split's user-item pairs (RecBole re-adds each sequence's first item).
    matrix = train._dataset.inter_matrix(form="coo")
    expected = {(int(u), int(i)) for u, i in zip(matrix.row, matrix.col)}
    assert edges == expected
    for split in (valid, test):
        feat = split._dataset.inter_feat
        held_out = zip(feat["user_id"].tolist(), feat["item_id"].tolist())
        for u, i in held_out:
            assert (u, i) not in edges or i in set(feat["item_id_list"][feat["user_id"] == u].flatten().tolist())


def test_sparse_propagation_equals_dense_on_a_tiny_graph():
    edges = np.array([[1, 1], [1, 2], [2, 2], [3, 1], [3, 3], [2, 4]])
    n_users, n_items = 4, 5
    adj = normalized_adjacency(edges, n_users, n_items)
    n = n_users + n_items
    A = np.zeros((n, n))
    for u, i in edges:
        A[u, n_users + i] = A[n_users + i, u] = 1.0
    deg = A.sum(1)
    inv = np.array([d**-0.5 if d > 0 else 0.0 for d in deg])
    A_hat = inv[:, None] * A * inv[None, :]
    np.testing.assert_allclose(adj.to_dense().numpy(), A_hat, rtol=1e-6, atol=1e-7)

    x = torch.randn(n, 3, dtype=torch.float64)
    enc = GraphEncoder(n, 3, 2).double()
    with torch.no_grad():
        enc.weight.copy_(x)
    points, tangent = enc(adj.double())
    Ah = torch.tensor(A_hat)
    expected = x + Ah @ x + Ah @ Ah @ x
    torch.testing.assert_close(points, expected)
    # Hyperbolic (HGCF): the nodes are points; the same propagation between log_o and exp_o.
    lor = Lorentz(1.0).double()
    henc = GraphEncoder(n, 3, 2, lorentz=lor).double()
    with torch.no_grad():
        henc.weight.copy_(lor.expmap0(x))
    assert henc.weight.shape == (n, 4)
    hpoints, htangent = henc(adj.double())
    # log_o of a stored point goes through geoopt's arcosh (argument clamped at 1 + 1e-15): ~3e-8 near o.
    torch.testing.assert_close(htangent, expected, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(hpoints, lor.expmap0(expected))


def test_vgae_kl_matches_hand_computation():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0], [1.5, 0.25]], dtype=torch.float64)
    log_sigma = torch.tensor([[0.1, -0.3], [0.0, 0.5], [-1.0, 0.2]], dtype=torch.float64)
    total = 0.0
    for i in range(3):
        for j in range(2):
            m, s = mu[i, j].item(), math.exp(log_sigma[i, j].item())
            total += 0.5 * (s * s + m * m - 1.0 - 2.0 * math.log(s))
    assert VGAE.kl(mu, log_sigma).item() == pytest.approx(total / 3, rel=1e-12)


def test_vgae_encoder_is_one_gcn_layer_per_head():
    """mu = A_hat X W_mu and log sigma = clamp(A_hat X W_sigma, -10, 10), against dense float64 products."""
    g = torch.Generator().manual_seed(0)
    edges = np.array([[0, 0], [0, 2], [1, 1], [2, 0], [2, 2], [3, 1]])
    adjacency = normalized_adjacency(edges, 4, 3)
    dense = adjacency.to_dense().double()
    vgae = VGAE(5, 3)
    with torch.no_grad():
        vgae.log_sigma.weight.mul_(40.0)  # some entries past the clamp
    x = torch.randn(7, 5, generator=g)
    mu, log_sigma = vgae.encode(adjacency, x)
    want_mu = dense @ x.double() @ vgae.mu.weight.double().T
    want_ls = (dense @ x.double() @ vgae.log_sigma.weight.double().T).clamp(-10, 10)
    assert (want_ls.abs() == 10).any()
    torch.testing.assert_close(mu.double(), want_mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_sigma.double(), want_ls, rtol=1e-5, atol=1e-5)


def test_vgae_reconstruction_and_negative_sampling(ml100k):
    config, data, train, _, _ = ml100k
    model = HM2Rec(config, train._dataset)
    pos, neg = model.sample_edges(500)
    edge_set = {tuple(e) for e in model.edges.tolist()}
    assert all(tuple(p) in edge_set for p in pos.tolist())
    assert not any(tuple(q) in edge_set for q in neg.tolist())
    zu, zi = torch.randn(model.n_users, 4), torch.randn(model.n_items, 4)
    pos_logit, neg_logit = (zu[pos[:, 0]] * zi[pos[:, 1]]).sum(-1), (zu[neg[:, 0]] * zi[neg[:, 1]]).sum(-1)
    bce = VGAE.reconstruction(pos_logit, neg_logit)
    logits = torch.cat([pos_logit, neg_logit])
    labels = torch.cat([torch.ones(500), torch.zeros(500)])
    manual = -(labels * torch.log(torch.sigmoid(logits)) + (1 - labels) * torch.log(1 - torch.sigmoid(logits))).mean()
    torch.testing.assert_close(bce, manual, rtol=1e-4, atol=1e-5)


def test_rope_bc_depends_on_relative_positions_only():
    torch.manual_seed(0)
    block = RoPEMamba(16, d_state=8, scan_backend="torch").double()
    with torch.no_grad():
        block.A_log.add_(torch.randn_like(block.A_log) * 0.3)  # untied values: tying must handle them
        block.dt_proj.bias.normal_(0, 0.5)
    x = torch.randn(3, 12, 16, dtype=torch.float64)
    y0 = block(x)
    block.position_offset = 7
    y7 = block(x)
    torch.testing.assert_close(y0, y7, rtol=1e-9, atol=1e-9)
    # The rotation matters (it is not the identity) ...
    plain = Mamba(16, d_state=8, scan_backend="torch").double()
    plain.load_state_dict(block.state_dict())
    plain.state_matrix = block.state_matrix
    assert not torch.allclose(plain(x), y0)
    # ... and rotating the inputs instead is absolute: shifting positions changes the output.
    pos = torch.arange(12).unsqueeze(0)
    assert not torch.allclose(plain(rotate_pairs(x, pos)), plain(rotate_pairs(x, pos + 7)))


def test_rotate_pairs_is_a_rotation():
    x = torch.randn(5, 6, dtype=torch.float64)
    pos = torch.arange(5)
    r = rotate_pairs(x, pos)
    torch.testing.assert_close(r.reshape(5, 3, 2).norm(dim=-1), x.reshape(5, 3, 2).norm(dim=-1))
    torch.testing.assert_close(r[0], x[0])  # position 0: no rotation
    theta1 = 10000 ** (-2 / 6)
    a = 2 * theta1  # position 2, pair 1
    expected = (x[2, 2] * math.cos(a) - x[2, 3] * math.sin(a), x[2, 2] * math.sin(a) + x[2, 3] * math.cos(a))
    assert r[2, 2].item() == pytest.approx(expected[0]) and r[2, 3].item() == pytest.approx(expected[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_norms_stay_finite(ml100k, dtype):
    config, data, train, _, _ = ml100k
    model = HM2Rec(config, train._dataset).to(dtype).train()
    n = model.graph.weight.shape[0]
    norms = torch.logspace(-8, math.log10(50), n, dtype=dtype)
    with torch.no_grad():
        w = torch.randn(n, model.hidden_size, dtype=dtype)
        # Points at geodesic distances 1e-8 ... 50 from the origin.
        model.graph.weight.copy_(model.lorentz.expmap0(w / w.norm(dim=1, keepdim=True) * norms[torch.randperm(n)][:, None]))
    batch = next(iter(train))[:64]
    losses = model.calculate_loss(batch)
    total = sum(losses)
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


ABLATIONS = list(itertools.product([True, False], [True, False], ["bc", "input", "none"], [True, False]))


@pytest.mark.slow
@pytest.mark.parametrize("hyperbolic,vgae,rope,moe", ABLATIONS)
def test_every_ablation_builds_and_trains(tiny_dataset, hyperbolic, vgae, rope, moe):
    config, _, train, _, _ = tiny(
        "HM2Rec", tiny_dataset, use_hyperbolic=hyperbolic, use_vgae=vgae, rope_mode=rope, use_moe=moe,
        hidden_size=8, d_state=4, vgae_edges=16,
    )
    torch.manual_seed(0)
    model = HM2Rec(config, train._dataset)
    opt = build_optimizer(model, lambda params: torch.optim.Adam(params, lr=0.01), 0.01)
    batch = next(iter(train))

    def eval_loss():  # deterministic: VGAE mean, no dropout
        model.eval()
        with torch.no_grad():
            value = model.calculate_loss(batch)
        model.train()
        return value.item()

    before = eval_loss()
    for _ in range(10):
        opt.zero_grad()
        out = model.calculate_loss(batch)
        assert isinstance(out, tuple)  # the margin loss is on by default, the VGAE's joins it
        sum(out).backward()
        assert model.graph.weight.grad.abs().sum() > 0  # the graph is trained
        opt.step()
    assert eval_loss() < before


def test_graph_is_computed_once_per_evaluation(monkeypatch):
    from recbole_hyper.training.trainer import PluginTrainer

    config, data, train, valid, test = prepare("HM2Rec", {"eval_batch_size": 128})
    model = HM2Rec(config, train._dataset)
    calls = {"n": 0}
    original = model.graph_item_embeddings

    def counting():
        calls["n"] += 1
        return original()

    monkeypatch.setattr(model, "graph_item_embeddings", counting)
    trainer = PluginTrainer(config, model)
    trainer.evaluate(valid, load_best_model=False)
    assert len(valid) > 1 and calls["n"] == 1
    model.train()
    model.calculate_loss(next(iter(train)))
    assert calls["n"] == 2  # once per training step


@pytest.mark.slow
def test_checkpoint_round_trip(in_tmp):
    import recbole_hyper
    from recbole_hyper.training.trainer import PluginTrainer

    config, data, train, valid, test = prepare("HM2Rec", {"epochs": 1, "checkpoint_dir": str(in_tmp)})
    trainer = PluginTrainer(config, HM2Rec(config, train._dataset))
    trainer.fit(train, valid, saved=True, show_progress=False)
    expected = trainer.evaluate(test, load_best_model=True)
    _, model, _, _, _, test2 = recbole_hyper.load_data_and_model(trainer.saved_model_file)
    again = PluginTrainer(config, model).evaluate(test2, load_best_model=False)
    assert again == expected


@pytest.mark.slow
def test_runner_end_to_end(in_tmp):
    args = [f"--{k}={v}" for k, v in fast_config(epochs=2).items()]
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_hyper.py"), "--model=HM2Rec", "--dataset=ml-100k", *args],
        cwd=in_tmp, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HM2Rec on ml-100k" in proc.stdout and "ndcg@10=" in proc.stdout


def test_propagation_gradient_uses_symmetry():
    from recbole_hyper.layers.graph import propagate

    edges = np.array([[1, 1], [1, 2], [2, 2], [3, 1], [3, 3], [2, 4]])
    A = normalized_adjacency(edges, 4, 5)
    dense = A.to_dense().double()
    assert torch.equal(dense, dense.T)
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    y = propagate(A, x)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(y, dense @ x)
    torch.testing.assert_close(x.grad, dense.T @ g)


def test_model_deep_copies_and_moves(ml100k):
    """RecBole's FLOPs counter deep-copies the model; the graph must survive it."""
    import copy

    config, data, train, _, _ = ml100k
    model = HM2Rec(config, train._dataset).eval()
    batch = next(iter(train))[:8]
    with torch.no_grad():
        expected = model.full_sort_predict(batch)
        clone = copy.deepcopy(model).eval()
        torch.testing.assert_close(clone.full_sort_predict(batch), expected)
        double = copy.deepcopy(model).double().eval()
        assert double.adjacency().dtype == torch.float64


def test_without_graph_rope_and_moe_hm2rec_is_mamba4rec(tiny_dataset):
    """The bottom of the ladder from Mamba4Rec to HM2Rec: with its graph branch, RoPE and
    MoE off, HM2Rec has Mamba4Rec's parameters (names and shapes) and, given Mamba4Rec's
    weights, its full-ranking scores."""
    from recbole_hyper.models.mamba4rec import Mamba4Rec

    config_m, _, train_m, _, test_m = tiny("Mamba4Rec", tiny_dataset)
    config, _, train_h, _, _ = tiny("HM2Rec", tiny_dataset, use_graph=False, rope_mode="none", use_moe=False)
    torch.manual_seed(0)
    mamba = Mamba4Rec(config_m, train_m._dataset).eval()
    hm2rec = HM2Rec(config, train_h._dataset).eval()
    assert hm2rec.graph is None and hm2rec.vgae is None and hm2rec.fuse is None
    shapes = {k: tuple(v.shape) for k, v in mamba.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in hm2rec.state_dict().items()} == shapes
    with torch.no_grad():  # weights unlike either model's init, so that nothing passes by accident
        for p in mamba.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hm2rec.load_state_dict(mamba.state_dict())
    batch = next(iter(test_m))[0]
    with torch.no_grad():
        want = mamba.full_sort_predict(batch)
        got = hm2rec.full_sort_predict(batch)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # With the graph branch on, the item table (and so the scores) changes ...
    config_g, _, train_g, _, _ = tiny("HM2Rec", tiny_dataset, rope_mode="none", use_moe=False, use_vgae=False)
    graph = HM2Rec(config_g, train_g._dataset).eval()
    graph.load_state_dict(mamba.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(graph.full_sort_predict(batch), want)
    # ... unless its projection starts at zero (fuse_init: zero): then it starts at Mamba4Rec's.
    config_z, _, train_z, _, _ = tiny("HM2Rec", tiny_dataset, rope_mode="none", use_moe=False, use_vgae=False,
                                      fuse_init="zero")
    zero = HM2Rec(config_z, train_z._dataset).eval()
    assert torch.count_nonzero(zero.fuse.weight) == 0
    zero.load_state_dict(mamba.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(zero.item_table(), mamba.item_embedding.weight, rtol=0, atol=0)
        torch.testing.assert_close(zero.full_sort_predict(batch), want, rtol=0, atol=0)


def test_is_training_edge_matches_the_edge_set(ml100k):
    config, data, train, valid, test = ml100k
    model = HM2Rec(config, train._dataset)
    edge_set = {tuple(e) for e in model.edges.tolist()}
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, model.n_users, (5000,), generator=g)
    items = torch.randint(0, model.n_items, (5000,), generator=g)
    # Half of the pairs are edges, half random (mostly non-edges), and the largest key too.
    pick = model.edges[torch.randint(len(model.edges), (2500,), generator=g)]
    users[:2500], items[:2500] = pick[:, 0], pick[:, 1]
    users[-1], items[-1] = model.n_users - 1, model.n_items - 1
    want = torch.tensor([(u, i) in edge_set for u, i in zip(users.tolist(), items.tolist())])
    assert want[:2500].all() and not want[2500:].all()
    assert torch.equal(model.is_training_edge(users, items), want)


@pytest.mark.parametrize("geometry", ["euclidean", "tangent", "manifold"])
def test_graph_lr_scale_sets_the_nodes_step_size(tiny_dataset, geometry):
    """Adam's first step moves a parameter by lr * g / (|g| + eps), about lr wherever g != 0;
    with graph_lr_scale the node table moves by scale * lr and every other parameter by lr."""
    settings = {"euclidean": {"use_hyperbolic": False}, "tangent": {"graph_parameters": "tangent"},
                "manifold": {}}[geometry]
    lr, scale = 0.01, 0.25
    moved = {}
    for s in (1.0, scale):
        config, _, train, _, _ = tiny("HM2Rec", tiny_dataset, hidden_size=8, d_state=4, vgae_edges=16,
                                      graph_lr_scale=s, **settings)
        torch.manual_seed(0)
        model = HM2Rec(config, train._dataset)
        opt = build_optimizer(model, lambda params: torch.optim.Adam(params, lr=lr), lr)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        torch.manual_seed(1)
        sum(model.calculate_loss(next(iter(train)))).backward()
        opt.step()
        after = dict(model.named_parameters())
        if geometry == "manifold":  # a Riemannian step: compare the distance travelled on the hyperboloid
            dist = model.lorentz.manifold.dist(before["graph.weight"], after["graph.weight"].detach())
            moved[s] = dist.max().item()
        else:
            moved[s] = (after["graph.weight"].detach() - before["graph.weight"]).abs().max().item()
        other = (after["fuse.weight"].detach() - before["fuse.weight"]).abs().max().item()
        assert other == pytest.approx(lr, rel=1e-3)  # the rest learns at the configured rate
    if geometry == "manifold":
        assert moved[scale] / moved[1.0] == pytest.approx(scale, rel=0.05)
    else:
        assert moved[1.0] == pytest.approx(lr, rel=1e-3)
        assert moved[scale] == pytest.approx(scale * lr, rel=1e-3)


def test_graph_lr_scale_survives_the_learning_rate_schedule(tiny_dataset):
    """The trainer's schedule multiplies each group's own initial rate: the ratio stays."""
    from recbole_hyper.training.trainer import PluginTrainer

    config, _, train, _, _ = tiny("HM2Rec", tiny_dataset, hidden_size=8, d_state=4, vgae_edges=16,
                                  graph_parameters="tangent", graph_lr_scale=0.1, learning_rate=0.01,
                                  lr_schedule="cosine", epochs=2)
    model = HM2Rec(config, train._dataset)
    trainer = PluginTrainer(config, model)
    trainer._train_epoch(train, 0)
    lrs = sorted(group["lr"] for group in trainer.optimizer.param_groups)
    assert len(lrs) == 2 and lrs[0] < 0.1 * 0.01  # decayed ...
    assert lrs[0] / lrs[1] == pytest.approx(0.1, rel=1e-9)  # ... at the same ratio


def test_shared_expert_adds_a_dense_ffn_to_the_mixture(tiny_dataset):
    """With the routed experts silenced, the block is LayerNorm(x + shared(x)) with the shared
    expert and LayerNorm(x) without it; off by default (no shared parameters)."""
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    for shared in (False, True):
        config, _, train, _, _ = tiny("HM2Rec", tiny_dataset, hidden_size=8, d_state=4, use_graph=False,
                                      moe_shared_expert=shared)
        block = HM2Rec(config, train._dataset).eval().mamba_layers[0].ffn
        assert (block.shared is not None) == shared
        with torch.no_grad():
            for expert in block.experts:
                expert.w_2.weight.zero_()
                expert.w_2.bias.zero_()
            dense = block.shared.w_2(torch.nn.functional.gelu(block.shared.w_1(x))) if shared else 0
            torch.testing.assert_close(block(x), block.LayerNorm(x + dense))
    config, _, train, _, _ = tiny("HM2Rec", tiny_dataset, hidden_size=8, d_state=4)
    assert not any(".shared." in name for name in HM2Rec(config, train._dataset).state_dict())
