"""What the base class asks of a model and gives it: docstrings, an explicit forward, declared
scores, and named extra loss terms."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from recbole_hyper.models.base import MambaSequentialRecommender, trim_padding
from recbole_hyper.models.mamba4rec import Mamba4Rec
from recbole_hyper.registry import MODELS, get_model_class
from tests.helpers import tiny


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_has_its_own_docstring_and_forward(name):
    cls = get_model_class(name)
    doc = vars(cls).get("__doc__") or ""
    assert "Paper:" in doc and "Keys that matter" in doc, name
    assert "forward" in vars(cls), f"{name} inherits its forward"


def test_base_docstring_lists_the_contract():
    doc = MambaSequentialRecommender.__doc__
    for duty in ("item_embedding", "mamba_layers", "init_weights", "embed", "forward", "dot_product_scores", "add_loss"):
        assert duty in doc, duty


def test_overriding_score_all_without_saying_how_scores_are_made_is_refused():
    with pytest.raises(TypeError, match="dot_product_scores"):

        class Undeclared(Mamba4Rec):  # noqa: F841
            def score_all(self, seq_output):
                return 2 * super().score_all(seq_output)


def _doubled(declared: bool):
    class Doubled(Mamba4Rec):
        dot_product_scores = declared

        def score_all(self, seq_output):
            return 2 * (seq_output @ self.item_table().T)

    return Doubled


@pytest.mark.parametrize("declared", [False, True])
def test_dot_product_scores_switches_between_full_and_blocked_cross_entropy(declared, tiny_dataset, in_tmp):
    """False: the loss is the cross-entropy of score_all's logits; True: of the plain dot products."""
    config, _, train, _, _ = tiny("Mamba4Rec", tiny_dataset, train_mode="full_sequence", hidden_size=8, d_state=4)
    torch.manual_seed(0)
    model = _doubled(declared)(config, train._dataset).eval()
    batch = next(iter(train))
    with torch.no_grad():
        out, targets, _ = model.training_pairs(batch)
        loss = model.main_loss(out, targets)
        logits = out.double() @ model.item_embedding.weight.double().T
    expected = F.cross_entropy(logits if declared else 2 * logits, targets)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_hmamba_norm_regulariser_is_a_named_term_equal_to_its_formula(tiny_dataset, in_tmp):
    """Full's norm_reg = weight * mean ||exp_o([0; e])||, which at K = 1 is sqrt(cosh(2 |e|)) per item."""
    config, _, train, _, _ = tiny("HMamba", tiny_dataset, norm_reg_weight=0.5, hidden_size=8, d_state=4)
    torch.manual_seed(0)
    model = get_model_class("HMamba")(config, train._dataset).train()
    batch = next(iter(train))
    losses = model.calculate_loss(batch)
    assert model.loss_names == ("main", "norm_reg")
    seq = trim_padding(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    r = model.item_embedding.weight.detach().double()[seq].norm(dim=-1)
    expected = 0.5 * torch.sqrt(torch.cosh(2 * r)).mean()
    torch.testing.assert_close(losses[1].detach().double(), expected, rtol=1e-5, atol=1e-6)
    assert not model.extra_losses(), "terms are consumed by calculate_loss"


def test_moe_balance_terms_are_named_per_layer(tiny_dataset, in_tmp):
    config, _, train, _, _ = tiny("HyMoERec", tiny_dataset, num_layers=2, hidden_size=8, d_state=4)
    model = get_model_class("HyMoERec")(config, train._dataset).train()
    losses = model.calculate_loss(next(iter(train)))
    assert model.loss_names == ("main", "load_balance_0", "load_balance_1")
    for layer, term in zip(model.mamba_layers, losses[1:]):
        assert term.item() <= 0 and term.item() >= -0.02 * math.log(layer.ffn.n_experts) - 1e-6


def test_trainer_logs_each_loss_part_by_name(tiny_dataset, in_tmp, caplog):
    from recbole.utils import init_logger

    from recbole_hyper.training.trainer import PluginTrainer

    config, _, train, valid, _ = tiny("HM2Rec", tiny_dataset, hidden_size=8, d_state=4, epochs=1, state="INFO")
    init_logger(config)
    trainer = PluginTrainer(config, get_model_class("HM2Rec")(config, train._dataset))
    logging.getLogger().addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            trainer.fit(train, valid, saved=False)
    finally:
        logging.getLogger().removeHandler(caplog.handler)
    text = caplog.text
    assert "train_loss[main]" in text and "train_loss[graph]" in text, text[-2000:]
