"""Recommendations from checkpoints: top-k by tokens, exclusions, errors, CLI, streaming."""

import json
import shutil

import pytest
import torch

import recbole_hyper
from recbole_hyper import Recommender
from recbole_hyper.serving import UnknownTokenError, serving_path
from tests.helpers import fast_config, run_cli

# End-to-end: every test here trains through the runner or in a fresh process.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One checkpoint per model, trained briefly on ml-100k through the runner."""
    folder = tmp_path_factory.mktemp("serving")
    out = {}
    for model in ("Mamba4Rec", "HM2Rec", "SASRec"):
        cfg = fast_config(checkpoint_dir=str(folder), n_layers=1, n_heads=1, inner_size=32)
        result = recbole_hyper.run_recbole_hyper(model, "ml-100k", config_dict=cfg)
        out[model] = result["checkpoint"]
    return out


def ranked_by_recbole(path, n_rows=64):
    """RecBole's own full_sort_predict on the first rows of its test batch, with their histories."""
    config, model, dataset, _, _, test = recbole_hyper.load_data_and_model(path)
    interaction = next(iter(test))[0]
    interaction = interaction[torch.arange(n_rows)]
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
    scores[:, 0] = -torch.inf
    tokens = dataset.field2id_token
    users = [tokens["user_id"][u] for u in interaction["user_id"].tolist()]
    histories = [
        [tokens["item_id"][i] for i in row[:n].tolist()]
        for row, n in zip(interaction["item_id_list"], interaction["item_length"].tolist())
    ]
    top = [[tokens["item_id"][i] for i in row] for row in torch.topk(scores, 10, dim=1).indices.tolist()]
    return users, histories, top, interaction


@pytest.mark.parametrize("model", ["Mamba4Rec", "HM2Rec", "SASRec"])
def test_recommend_sequences_ranks_as_full_sort_predict(model, trained, in_tmp):
    users, histories, top, _ = ranked_by_recbole(trained[model])
    rec = Recommender.from_checkpoint(trained[model])
    frame = rec.recommend_sequences(histories, k=10, exclude_seen=False)
    assert list(frame.columns) == ["sequence", "rank", "item", "score"]
    got = frame.groupby("sequence")["item"].apply(list).tolist()
    assert got == top
    assert frame.groupby("sequence")["rank"].apply(list).iloc[0] == list(range(1, 11))


def test_user_histories_are_recbole_sequences(trained, in_tmp):
    """A user's stored history ends with RecBole's test row: its history, then its target."""
    users, histories, _, interaction = ranked_by_recbole(trained["Mamba4Rec"])
    rec = Recommender.from_checkpoint(trained["Mamba4Rec"])
    config = rec.config
    _, _, dataset, _, _, _ = recbole_hyper.load_data_and_model(trained["Mamba4Rec"])
    targets = [dataset.field2id_token["item_id"][i] for i in interaction["item_id"].tolist()]
    for user, history, target in zip(users, histories, targets):
        stored = [rec.data.item_tokens[i] for i in rec.data.history(rec.user_index[user]).tolist()]
        assert stored[-1] == target
        assert stored[:-1][-config["MAX_ITEM_LIST_LENGTH"]:] == history


def test_recommend_for_users_and_exclusions(trained, in_tmp):
    rec = Recommender.from_checkpoint(trained["Mamba4Rec"])
    history = {rec.data.item_tokens[i] for i in rec.data.history(rec.user_index["196"]).tolist()}
    everything = rec.recommend(["196"], k=rec.n_items)
    assert list(everything.columns) == ["user", "rank", "item", "score"]
    assert set(everything["item"]).isdisjoint(history)
    assert set(everything["item"]) | history == set(rec.item_index)
    kept = rec.recommend("196", k=rec.n_items, exclude_seen=False)
    assert set(kept["item"]) == set(rec.item_index)
    top = kept["item"].iloc[0]
    assert top not in set(rec.recommend("196", k=20, exclude_seen=False, exclude=[top])["item"])
    # Scores come sorted, ranks count from 1.
    assert kept["score"].is_monotonic_decreasing and kept["rank"].tolist() == list(range(1, len(kept) + 1))


def test_unknown_tokens_and_empty_histories(trained, in_tmp):
    rec = Recommender.from_checkpoint(trained["Mamba4Rec"])
    with pytest.raises(UnknownTokenError, match="Unknown user token.*'nobody'"):
        rec.recommend(["196", "nobody"])
    assert set(rec.recommend(["196", "nobody"], errors="ignore")["user"]) == {"196"}
    with pytest.raises(UnknownTokenError, match="Unknown item token.*'no-such-item'"):
        rec.recommend_sequences([["242", "no-such-item"]])
    with pytest.raises(ValueError, match="History 0 is empty"):
        rec.recommend_sequences([[]])


def test_checkpoint_of_an_unknown_model(trained, tmp_path):
    from recbole_hyper.compat import load_checkpoint
    from recbole_hyper.registry import UnknownModelError

    checkpoint = load_checkpoint(trained["Mamba4Rec"])
    checkpoint["config"]["model"] = "NoSuchModel"
    path = tmp_path / "odd.pth"
    torch.save(checkpoint, path)
    shutil.copy(serving_path(trained["Mamba4Rec"]), serving_path(path))
    with pytest.raises(UnknownModelError, match="NoSuchModel"):
        Recommender.from_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        Recommender.from_checkpoint(tmp_path / "missing.pth")


def test_loading_uses_the_stored_serving_data(trained, tmp_path, monkeypatch, in_tmp):
    import recbole_hyper.serving.recommender as serving

    path = tmp_path / "copy.pth"
    shutil.copy(trained["HM2Rec"], path)
    # No serving file yet: it is made from the dataset once, then reused.
    rebuilt = Recommender.from_checkpoint(path)
    assert serving_path(path).is_file()
    monkeypatch.setattr(serving, "_rebuild", lambda config: pytest.fail("rebuilt the dataset"))
    stored = Recommender.from_checkpoint(path)
    torch.testing.assert_close(stored.model.item_table(), rebuilt.model.item_table())
    assert torch.equal(stored.data.items, rebuilt.data.items)


def test_cli_prints_recommendations(trained, tmp_path, in_tmp):
    proc = run_cli(["recommend", trained["Mamba4Rec"], "--users", "196", "186", "--k", "3", "--format", "json"], in_tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [(r["user"], r["rank"]) for r in rows] == [("196", 1), ("196", 2), ("196", 3), ("186", 1), ("186", 2), ("186", 3)]
    sequences = tmp_path / "seqs.txt"
    sequences.write_text("242 302 377\n51\n")
    proc = run_cli(["recommend", trained["Mamba4Rec"], "--sequences-file", str(sequences), "--k", "2"], in_tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "sequence,rank,item,score" and len(proc.stdout.splitlines()) == 5
    proc = run_cli(["recommend", trained["Mamba4Rec"], "--users", "nobody"], in_tmp)
    assert proc.returncode == 2 and "Unknown user token" in proc.stderr and "Traceback" not in proc.stderr


def test_streaming_through_the_recommender(trained, in_tmp):
    rec = Recommender.from_checkpoint(trained["HM2Rec"])
    rec.model.double()
    state = rec.start()
    with pytest.raises(ValueError, match="at least one item"):
        rec.topk(state)
    for item in ["242", "302", "377"]:
        state = rec.step(state, item)
    streamed = rec.topk(state, k=10)
    expected = rec.recommend_sequences([["242", "302", "377"]], k=10)
    assert streamed["item"].tolist() == expected["item"].tolist()
    # A user's state holds the whole history (the full recurrence): it ranks as
    # encoding the whole history at once, not only its last MAX_ITEM_LIST_LENGTH items.
    history = rec.data.history(rec.user_index["196"])
    assert len(history) > rec.max_len
    state = rec.start("196")
    assert state["position"].tolist() == [len(history)]
    streamed = rec.topk(state)["item"].tolist()
    rec.max_len = 10**6
    assert streamed == rec.recommend("196")["item"].tolist()
    # Batched states: two users together, then saved and loaded.
    both = rec.step(rec.concat([rec.start("196"), rec.start("186")]), ["242", "302"])
    torch.save(both, in_tmp / "state.pt")
    again = torch.load(in_tmp / "state.pt", weights_only=False)
    assert rec.topk(again)["user"].unique().tolist() == ["196", "186"]
    single = rec.topk(rec.step(rec.start("186"), "302"))
    assert rec.topk(again).query("user == '186'")["item"].tolist() == single["item"].tolist()
    with pytest.raises(TypeError, match="recurrent model"):
        Recommender.from_checkpoint(trained["SASRec"]).start()
