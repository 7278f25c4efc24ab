"""Streaming: folding items one at a time equals encoding the whole sequence (float64)."""

import pytest
import torch

from tests.helpers import every_position, tiny

MODELS = ["Mamba4Rec", "HyMoERec", "HMamba", "HM2Rec"]


def built(model_name, tiny_dataset, **cfg):
    from recbole_hyper.registry import get_model_class

    config, _, train, _, _ = tiny(model_name, tiny_dataset, **cfg)
    torch.manual_seed(0)
    model = get_model_class(model_name)(config, train._dataset).double().eval()
    return model


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_stepping_equals_encoding_the_whole_sequence(model_name, num_layers, tiny_dataset):
    model = built(model_name, tiny_dataset, num_layers=num_layers)
    torch.manual_seed(1)
    n = 23  # longer than MAX_ITEM_LIST_LENGTH (10): the recurrence runs over all of it
    seqs = torch.randint(1, model.n_items, (3, n))
    with torch.no_grad():
        reference = every_position(model, seqs, torch.full((3,), n))  # (3, n, d)
        state = model.stream_start(3, dtype=torch.float64)
        for t in range(n):
            state = model.stream_step(seqs[:, t], state)
            torch.testing.assert_close(state["output"], reference[:, t], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(model.score_all(state["output"]), model.score_all(reference[:, -1]),
                                   rtol=1e-6, atol=1e-9)
    assert state["position"].tolist() == [n] * 3


@pytest.mark.parametrize("rope_mode", ["bc", "input"])
def test_states_of_different_lengths_step_together(rope_mode, tiny_dataset):
    """HM2Rec's positions enter through RoPE: a batch of states at different positions."""
    model = built("HM2Rec", tiny_dataset, rope_mode=rope_mode)
    a, b = torch.tensor([3, 5, 7, 2]), torch.tensor([4, 9])
    with torch.no_grad():
        sa, sb = model.stream_start(1, dtype=torch.float64), model.stream_start(1, dtype=torch.float64)
        for item in a[:-1]:
            sa = model.stream_step(item.view(1), sa)
        for item in b[:-1]:
            sb = model.stream_step(item.view(1), sb)
        joined = {
            "layers": [{k: torch.cat([la[k], lb[k]]) for k in la} for la, lb in zip(sa["layers"], sb["layers"])],
            "position": torch.cat([sa["position"], sb["position"]]),
        }
        both = model.stream_step(torch.tensor([a[-1], b[-1]]), joined)["output"]
        ref_a = every_position(model, a.view(1, -1), torch.tensor([4]))[0, -1]
        ref_b = every_position(model, b.view(1, -1), torch.tensor([2]))[0, -1]
    torch.testing.assert_close(both, torch.stack([ref_a, ref_b]), rtol=1e-6, atol=1e-9)
