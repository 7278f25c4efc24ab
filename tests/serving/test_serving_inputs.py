"""Bad inputs to serving: one clear error each, nothing silently wrong, nothing half-written."""

import shutil

import pytest
import torch

from recbole_hyper.cli import main, read_sequences
from recbole_hyper.quick_start import run_recbole_hyper
from recbole_hyper.serving import Recommender, ServingError, UnknownTokenError, serving_path
from tests.helpers import fast_config
from tests.helpers import train_tiny as train

# Every test here trains a small model first.
pytestmark = pytest.mark.slow


@pytest.fixture
def copied_data(tiny_dataset, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(tiny_dataset, target)
    return target


def test_serving_data_of_another_checkpoint_is_refused(tiny_dataset, in_tmp):
    first = train(tiny_dataset)
    second = train(tiny_dataset, seed=8)
    shutil.copy(serving_path(first), serving_path(second))  # same data: accepted
    assert Recommender.from_checkpoint(second).recommend(["u1"], k=2).shape[0] == 2
    checkpoint = torch.load(first, weights_only=False)
    checkpoint["serving_fingerprint"] = "0" * 64  # as if trained on other token maps
    torch.save(checkpoint, first)
    with pytest.raises(ServingError, match="do not belong to"):
        Recommender.from_checkpoint(first)


def test_a_changed_dataset_is_refused_and_no_serving_file_is_written(copied_data, in_tmp):
    path = train(str(copied_data))
    serving_path(path).unlink()
    inter = copied_data / "tiny" / "tiny.inter"
    original = inter.read_text()
    header, *rows = original.splitlines()
    inter.write_text("\n".join([header, *reversed(rows)]) + "\n")  # same data, other token order
    with pytest.raises(ServingError, match="has changed since"):
        Recommender.from_checkpoint(path)
    assert not serving_path(path).exists()
    inter.write_text(original)
    rec = Recommender.from_checkpoint(path)  # the training data again: rebuilt and kept
    assert serving_path(path).is_file() and rec.recommend(["u2"], k=1).shape[0] == 1


def test_a_non_sequential_model_trains_and_then_is_refused_for_serving(tiny_dataset, in_tmp):
    path = train(tiny_dataset, model="BPR", train_mode="augmented")
    assert not serving_path(path).exists()
    with pytest.raises(ServingError, match="not a sequential model"):
        Recommender.from_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "random", "foreign", "bad_serving_file", "cuda"])
def test_unreadable_inputs_give_one_clear_error(damage, tiny_dataset, in_tmp, tmp_path, capsys):
    path = train(tiny_dataset)
    device = "cpu"
    if damage == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif damage == "random":
        open(path, "wb").write(bytes(range(256)) * 8)
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "bad_serving_file":
        serving_path(path).write_bytes(b"not a torch file")
    elif damage == "cuda":
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        device = "cuda"
    with pytest.raises(ServingError):
        Recommender.from_checkpoint(path, device=device)
    assert main(["recommend", path, "--users", "u1", "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_python_api_arguments_are_checked(tiny_dataset, in_tmp):
    rec = Recommender.from_checkpoint(train(tiny_dataset))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k = "):
            rec.recommend(["u1"], k=bad)
    with pytest.raises(ValueError, match="errors = 'skip'"):
        rec.recommend(["u1"], errors="skip")
    with pytest.raises(ValueError, match="at least one state"):
        rec.concat([])
    with pytest.raises(UnknownTokenError, match="step\\(\\) needs an item") as caught:
        rec.step(rec.start("u1"), "no-such-item")
    assert "errors=" not in str(caught.value)


def test_a_best_checkpoint_is_never_half_written(tiny_dataset, in_tmp, monkeypatch):
    path = train(tiny_dataset)
    before = open(path, "rb").read()
    from recbole_hyper.compat import save_safely

    def broken_save(obj, f, **kwargs):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_safely({"x": 1}, path)
    assert open(path, "rb").read() == before
    assert not any(p.name.endswith(".tmp") for p in in_tmp.rglob("*"))


def test_sequences_file_keeps_line_numbers_and_refuses_an_empty_file(tmp_path):
    lines = tmp_path / "h.txt"
    lines.write_text("i1 i2\n\n  \ni3\tlong token\n")
    assert read_sequences(lines) == ([1, 4], [["i1", "i2"], ["i3", "long", "token"]])
    assert read_sequences(lines, "\\t") == ([1, 4], [["i1 i2"], ["i3", "long token"]])
    lines.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no history"):
        read_sequences(lines)


def test_a_non_sequential_model_trains_on_own_data_without_load_col(tiny_dataset, in_tmp):
    """The runner's protocol splits by time: RecBole's BPR needs the time column loaded too."""
    result = run_recbole_hyper(
        "BPR", "tiny", config_dict=fast_config(data_path=tiny_dataset, train_batch_size=8), count_flops=False
    )
    assert set(result["test_result"]) >= {"ndcg@10", "hit@10"}

