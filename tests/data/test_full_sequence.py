"""Full-sequence training covers exactly RecBole's augmented (history -> target) pairs."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_hyper.data import target_field, window_rows
from tests.helpers import SEQ_LENGTHS, prepare, tiny


def pairs(loader, field=None):
    out = Counter()
    for batch in loader:
        seqs, lens = batch["item_id_list"], batch["item_length"]
        for i in range(len(lens)):
            n = int(lens[i])
            if field is None:
                out[(tuple(seqs[i, :n].tolist()), int(batch["item_id"][i]))] += 1
            else:
                for j in range(n):
                    out[(tuple(seqs[i, : j + 1].tolist()), int(batch[field][i, j]))] += 1
    return out


def test_window_rows():
    # Two users with 5 and 2 training rows, windows of 2: rows ending windows
    # are the last of each user and every second one before it.
    assert window_rows(np.array([1, 1, 1, 1, 1, 2, 2]), 2).tolist() == [0, 2, 4, 6]
    assert window_rows(np.array([3, 3, 3]), 10).tolist() == [2]


def test_same_pairs_as_augmented_for_short_sequences(tiny_dataset):
    _, _, aug, valid_a, test_a = tiny("Mamba4Rec", tiny_dataset, train_mode="augmented")
    config, _, full, valid_f, test_f = tiny("Mamba4Rec", tiny_dataset, train_mode="full_sequence")
    field = target_field(config)
    assert pairs(full, field) == pairs(aug)
    assert sum(pairs(aug).values()) == sum(n - 3 for n in SEQ_LENGTHS)  # targets 2..n-2
    assert len(full.dataset) == len(SEQ_LENGTHS)  # one window per user
    # Validation and test are RecBole's, unchanged.
    for a, f in ((valid_a, valid_f), (test_a, test_f)):
        ia, if_ = a._dataset.inter_feat, f._dataset.inter_feat
        assert torch.equal(ia["item_id_list"], if_["item_id_list"]) and torch.equal(ia["item_id"], if_["item_id"])


def test_every_training_target_once_for_long_sequences(tiny_dataset):
    _, _, aug, _, _ = tiny("Mamba4Rec", tiny_dataset, train_mode="augmented", MAX_ITEM_LIST_LENGTH=3)
    config, _, full, _, _ = tiny("Mamba4Rec", tiny_dataset, train_mode="full_sequence", MAX_ITEM_LIST_LENGTH=3)
    field = target_field(config)
    targets_aug = Counter(int(t) for b in aug for t in b["item_id"])
    targets_full = Counter(int(t) for b in full for row in b[field] for t in row if t > 0)
    assert targets_full == targets_aug
    # Histories are the windows' prefixes, at most L items, ending right before the
    # target in the user's own chronological sequence (read back from the atomic file).
    dataset = full.dataset
    users, items = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    sequences = {}
    lines = (Path(tiny_dataset) / "tiny" / "tiny.inter").read_text().splitlines()[1:]
    for user, item, t in sorted((ln.split("\t") for ln in lines), key=lambda r: (r[0], float(r[2]))):
        sequences.setdefault(user, []).append(item)
    checked = 0
    for batch in full:
        for row in range(len(batch["user_id"])):
            seq = sequences[users[int(batch["user_id"][row])]]
            inputs, targets = batch["item_id_list"][row].tolist(), batch[field][row].tolist()
            for k, t in enumerate(targets):
                if t == 0:
                    continue
                history = [items[i] for i in inputs[: k + 1]]
                j = seq.index(items[t])
                assert 1 <= len(history) <= 3
                assert history == seq[j - len(history) : j]
                checked += 1
    assert checked == sum(targets_aug.values())


@pytest.mark.parametrize("model_name", ["Mamba4Rec", "HyMoERec", "HMamba"])
def test_summed_loss_is_the_same_in_both_modes(tiny_dataset, model_name):
    from recbole_hyper.registry import get_model_class

    cls = get_model_class(model_name)
    sums = {}
    state = None
    for mode in ("augmented", "full_sequence"):
        config, _, train, _, _ = tiny(model_name, tiny_dataset, train_mode=mode)
        torch.manual_seed(0)
        model = cls(config, train._dataset)
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        model.eval()
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for batch in train:
                out, targets, _ = model.training_pairs(batch)
                total += F.cross_entropy(model.score_all(out), targets, reduction="sum").double()
        sums[mode] = total.item()
    assert sums["augmented"] == pytest.approx(sums["full_sequence"], rel=1e-5)


def test_batch_size_default_counts_targets(tiny_dataset, in_tmp):
    from recbole_hyper.config import PluginConfig

    common = {"data_path": tiny_dataset, "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
    config = PluginConfig(
        model="Mamba4Rec", dataset="tiny",
        config_dict=dict(common, train_mode="full_sequence", MAX_ITEM_LIST_LENGTH=50),
    )
    assert config["train_batch_size"] == 2048 // 50
    config = PluginConfig(
        model="Mamba4Rec", dataset="tiny",
        config_dict=dict(common, train_mode="full_sequence", train_batch_size=16),
    )
    assert config["train_batch_size"] == 16


def test_full_sequence_defaults_apply_only_in_that_mode(tiny_dataset, in_tmp):
    from recbole_hyper.config import PluginConfig

    common = {
        "data_path": tiny_dataset,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "full_sequence_defaults": {"train_batch_size": 7, "learning_rate": 0.004, "num_layers": 3},
    }

    def config(**cfg):
        return PluginConfig(model="Mamba4Rec", dataset="tiny", config_dict=dict(common, **cfg))

    full = config(train_mode="full_sequence")
    assert (full["train_batch_size"], full["learning_rate"]) == (7, 0.004)
    assert full["num_layers"] == 3  # a model key there wins over the model's yaml ...
    augmented = config(train_mode="augmented")
    assert (augmented["train_batch_size"], augmented["learning_rate"]) == (2048, 0.001)
    assert augmented["num_layers"] == 1  # ... in that mode only
    mine = config(train_mode="full_sequence", learning_rate=0.01)
    assert (mine["train_batch_size"], mine["learning_rate"]) == (7, 0.01)  # the user's own value wins
    assert config(train_mode="full_sequence", num_layers=2)["num_layers"] == 2


@pytest.mark.parametrize(
    "model_name", ["Mamba4Rec", pytest.param("HyMoERec", marks=pytest.mark.slow), pytest.param("HMamba", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_full_sequence_training_reduces_the_loss(model_name, loss_type):
    from recbole_hyper.registry import get_model_class

    config, _, train, _, _ = prepare(
        model_name, {"train_mode": "full_sequence", "dropout_prob": 0.0, "loss_type": loss_type}
    )
    torch.manual_seed(0)
    model = get_model_class(model_name)(config, train._dataset)
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    batches = list(train)
    assert target_field(config) in batches[0]

    def main_loss(b):
        torch.manual_seed(1)  # the same BPR negatives before and after
        model.eval()
        with torch.no_grad():
            value = model.main_loss(*model.training_pairs(b)).item()
        model.extra_losses()
        model.train()
        return value

    before = main_loss(batches[0])
    for _ in range(3):
        for b in batches:
            opt.zero_grad()
            out = model.calculate_loss(b)
            (sum(out) if isinstance(out, tuple) else out).backward()
            opt.step()
    assert main_loss(batches[0]) < before * 0.97


# ---------------------------------------------------- building the rows fast
def _splits(model, mode, recbole_loop, monkeypatch, **cfg):
    """Train/valid/test Interactions built by the plugin, or with RecBole's own per-row loop."""
    from recbole_hyper.data import PluginSequentialDataset

    with monkeypatch.context() as m:
        if recbole_loop:
            m.setattr(PluginSequentialDataset, "_vectorisable", lambda self: False)
        _, _, train, valid, test = prepare(model, dict(cfg, train_mode=mode))
    return [d._dataset.inter_feat for d in (train, valid, test)]


@pytest.mark.parametrize("mode", ["augmented", "full_sequence"])
def test_rows_equal_recbole_own_augmentation(mode, monkeypatch, in_tmp):
    """ml-100k (real timestamps, with ties): the same rows, in the same order, as RecBole's loop."""
    ours = _splits("Mamba4Rec", mode, False, monkeypatch)
    reference = _splits("Mamba4Rec", mode, True, monkeypatch)
    for a, b in zip(ours, reference):
        assert sorted(a.columns) == sorted(b.columns)
        for field in a.columns:
            assert torch.equal(a[field], b[field]), field
    if mode == "full_sequence":
        # The windows cover each training target once: 100,000 ratings less each
        # user's first item, validation and test target (943 users).
        assert int(ours[0]["item_length"].sum()) == 100_000 - 3 * 943


def test_windows_only_when_the_split_allows(tiny_dataset):
    """Another split needs every row first; the windows are then cut from the training split."""
    config, data, full, _, _ = tiny(
        "Mamba4Rec", tiny_dataset, train_mode="full_sequence",
        eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"},
    )
    assert not data._windows_built
    assert len(full.dataset) >= len(SEQ_LENGTHS)


# ------------------------------------------------ RecBole's causal baselines
@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec"])
def test_baseline_per_position_outputs_equal_its_forward_on_each_prefix(model_name, tiny_dataset):
    from recbole_hyper.quick_start import training_class

    config, _, train, _, _ = tiny(model_name, tiny_dataset, train_mode="full_sequence",
                                  hidden_size=8, inner_size=16, n_layers=2, n_heads=2, embedding_size=8)
    cls = training_class(config)
    assert cls.__name__ == model_name and cls is not config.model_class
    torch.manual_seed(0)
    model = cls(config, train._dataset).eval()
    batch = next(iter(train))
    seq, lengths = batch["item_id_list"], batch["item_length"]
    with torch.no_grad():
        every = model.all_positions(seq, lengths)
        for i in range(len(lengths)):
            for t in range(int(lengths[i])):
                prefix = torch.zeros_like(seq[i : i + 1])
                prefix[0, : t + 1] = seq[i, : t + 1]
                own = model.forward(prefix, torch.tensor([t + 1]))  # RecBole's forward, last position
                torch.testing.assert_close(every[i, t], own[0], rtol=1e-5, atol=1e-6)
    # The loss is CE over every target of the window.
    field = target_field(config)
    mask = batch[field] > 0
    expected = F.cross_entropy(every[mask] @ model.item_embedding.weight.t(), batch[field][mask])
    with torch.no_grad():
        assert model.calculate_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_non_causal_baseline_refuses_full_sequence(tiny_dataset, in_tmp):
    from recbole_hyper.config.params import HyperParameterError

    with pytest.raises(HyperParameterError, match="train_mode = 'full_sequence'.*SASRec, GRU4Rec"):
        tiny("BERT4Rec", tiny_dataset, train_mode="full_sequence")


@pytest.mark.slow
def test_runner_trains_sasrec_in_full_sequence_mode(in_tmp):
    from tests.helpers import fast_config, run_cli

    args = [f"--{k}={v}" for k, v in fast_config(train_mode="full_sequence", n_layers=1, n_heads=1,
                                                  inner_size=32).items()]
    proc = run_cli(["--model=SASRec", "--dataset=ml-100k", *args], in_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SASRec on ml-100k" in proc.stdout and "ndcg@10=" in proc.stdout
