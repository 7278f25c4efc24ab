"""Sampled softmax (loss_type SampledSoftmax): the loss against hand-computed references, the sampler,
and every model in both training modes."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_hyper.ops.sampled_softmax import CandidateSampler, sampled_softmax_loss
from tests.helpers import tiny


def reference_loss(pos, neg, targets, negatives, log_q=None):
    """Row by row in float64: -s'(y) + log(exp s'(y) + sum over negatives != y of exp s'(n))."""
    total = 0.0
    for i in range(len(targets)):
        corr = (lambda item: float(log_q[item])) if log_q is not None else (lambda item: 0.0)
        p = float(pos[i]) - corr(int(targets[i]))
        terms = [math.exp(p)]
        for k, item in enumerate(negatives.tolist()):
            if item != int(targets[i]):
                terms.append(math.exp(float(neg[i, k]) - corr(item)))
        total += -p + math.log(sum(terms))
    return total / len(targets)


def test_loss_equals_a_hand_computed_one_with_correction_and_accidental_hits():
    g = torch.Generator().manual_seed(0)
    targets = torch.tensor([3, 5, 1, 3])
    negatives = torch.tensor([2, 3, 7, 7, 4])  # 3 is an accidental hit for rows 0 and 3; 7 drawn twice
    pos, neg = torch.randn(4, generator=g), torch.randn(4, 5, generator=g)
    log_q = torch.log(torch.tensor([0.0, 0.1, 0.2, 0.05, 0.15, 0.1, 0.2, 0.2]).clamp_min(1e-3))
    for lq in (None, log_q):
        got = sampled_softmax_loss(pos, neg, targets, negatives, lq)
        assert got.item() == pytest.approx(reference_loss(pos, neg, targets, negatives, lq), rel=1e-6)


def test_every_item_once_is_the_full_cross_entropy():
    g = torch.Generator().manual_seed(1)
    n_items, d = 30, 8
    h, table = torch.randn(6, d, generator=g), torch.randn(n_items, d, generator=g)
    targets = torch.randint(1, n_items, (6,), generator=g)
    everything = torch.arange(1, n_items)
    logits = h @ table.T
    sampler = CandidateSampler(n_items)  # uniform: the correction is one constant, it changes nothing
    got = sampled_softmax_loss((h * table[targets]).sum(-1), logits[:, everything], targets, everything, sampler.log_q)
    full = F.cross_entropy(logits[:, 1:].double(), targets - 1)
    assert got.item() == pytest.approx(full.item(), rel=1e-6)


def test_popularity_sampler_draws_by_count_and_never_padding_or_unseen_items():
    counts = torch.tensor([50, 0, 1, 2, 3, 4, 0, 10])
    sampler = CandidateSampler(8, counts)
    torch.manual_seed(0)
    draws = torch.bincount(sampler(200_000), minlength=8).double()
    assert draws[0] == 0 and draws[1] == 0 and draws[6] == 0
    expected = counts.double().clone()
    expected[0] = 0
    expected = expected / expected.sum() * 200_000
    for item in (2, 3, 4, 5, 7):
        assert abs(draws[item] - expected[item]) < 5 * math.sqrt(expected[item])
    assert torch.isfinite(sampler.log_q).all()
    uniform = CandidateSampler(8)
    assert torch.bincount(uniform(10_000), minlength=8)[0] == 0


MODELS = ["Mamba4Rec", "HyMoERec", "HMamba", "HM2Rec"]


@pytest.mark.parametrize("mode", ["augmented", "full_sequence"])
@pytest.mark.parametrize("model_name", MODELS)
def test_models_train_with_the_sampled_softmax_and_score_candidates_like_score_all(model_name, mode, tiny_dataset, in_tmp):
    config, _, train, _, _ = tiny(
        model_name, tiny_dataset, loss_type="SampledSoftmax", sampled_softmax_negatives=7, train_mode=mode,
        hidden_size=8, d_state=4,
    )
    from recbole_hyper.registry import get_model_class

    torch.manual_seed(0)
    model = get_model_class(model_name)(config, train.dataset)
    batch = next(iter(train))
    out, targets, _ = model.training_pairs(batch)
    # score_candidates is score_all restricted to the candidates.
    items = torch.tensor([4, 1, 9, 9, 2])
    assert torch.allclose(model.score_candidates(out, items), model.score_all(out)[:, items], atol=1e-5)
    # With every item as a candidate the model's loss is the full cross-entropy over real items.
    everything = torch.arange(1, model.n_items)
    model.candidate_sampler.forward = lambda n: everything
    loss = model.main_loss(out, targets)
    full = F.cross_entropy(model.score_all(out)[:, 1:].double(), targets - 1)
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)
    # A training step runs and reaches every trainable parameter the full loss reaches.
    del model.candidate_sampler.forward
    total = model.calculate_loss(batch)
    total = sum(total) if isinstance(total, tuple) else total
    total.backward()
    assert torch.isfinite(total)
    assert model.item_embedding.weight.grad is not None and model.item_embedding.weight.grad.abs().sum() > 0


def test_logq_switch_changes_the_loss_only_for_popularity_sampling(tiny_dataset, in_tmp):
    from recbole_hyper.registry import get_model_class

    losses = {}
    for sampler in ("uniform", "popularity"):
        for logq in (True, False):
            config, _, train, _, _ = tiny("Mamba4Rec", tiny_dataset, loss_type="SampledSoftmax", sampled_softmax_negatives=16,
                                          sampled_softmax_sampler=sampler, sampled_softmax_logq=logq, hidden_size=8, d_state=4)
            torch.manual_seed(0)
            model = get_model_class("Mamba4Rec")(config, train.dataset).eval()
            batch = next(iter(train))
            torch.manual_seed(1)
            losses[sampler, logq] = model.calculate_loss(batch).item()
    assert losses["uniform", True] == pytest.approx(losses["uniform", False], rel=1e-6)
    assert abs(losses["popularity", True] - losses["popularity", False]) > 1e-3


def test_bad_ssm_settings_are_rejected(tiny_dataset, in_tmp):
    from recbole_hyper.config.params import HyperParameterError

    for bad in ({"sampled_softmax_negatives": 0}, {"sampled_softmax_sampler": "zipf"}):
        with pytest.raises(HyperParameterError, match=next(iter(bad))):
            tiny("Mamba4Rec", tiny_dataset, loss_type="SampledSoftmax", **bad)
