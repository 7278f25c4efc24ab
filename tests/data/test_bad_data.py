"""Data the header check alone would miss: one clear DataError before anything is loaded or written."""

import pytest

from recbole_hyper.config import PluginConfig
from recbole_hyper.data.atomic_files import DataError
from tests.helpers import fast_config

HEADER = "user_id:token\titem_id:token\ttimestamp:float"
GOOD = [f"u{u}\ti{(u + t) % 9 + 1}\t{t}" for u in range(1, 5) for t in range(1, 6)]


def write(tmp_path, text: bytes, side: dict = None):
    folder = tmp_path / "data" / "bad"
    folder.mkdir(parents=True)
    (folder / "bad.inter").write_bytes(text)
    for suffix, content in (side or {}).items():
        (folder / f"bad{suffix}").write_bytes(content)
    return tmp_path / "data"


def lines(*rows, header=HEADER) -> bytes:
    return ("\n".join([header, *GOOD, *rows]) + "\n").encode("utf-8")


CASES = {
    "duplicated column": (lines(header=HEADER + "\titem_id:token"), None, "more than once"),
    "non-numeric time": (lines("u1\ti3\tyesterday"), None, "line 22: timestamp 'yesterday' is not a number"),
    "empty time": (lines("u1\ti3\t"), None, "timestamp '' is not a number"),
    "NaN time": (lines("u1\ti3\tnan"), None, "timestamp 'nan' is not a number"),
    "empty item": (lines("u1\t\t9"), None, "line 22: the item_id cell is empty"),
    "empty user": (lines("\ti3\t9"), None, "the user_id cell is empty"),
    "missing field": (lines("u1\ti3"), None, "line 22: 2 fields where the header has 3"),
    "not utf-8": (lines() + b"u1\ti\xff\t9\n", None, "not utf-8 text: byte 0xff on line 22"),
    "byte-order mark": (b"\xef\xbb\xbf" + lines(), None, "byte-order mark"),
    "empty side file": (lines(), {".item": b""}, "bad.item is empty"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_one_clear_error_before_loading(case, tmp_path, in_tmp):
    text, side, message = CASES[case]
    data = write(tmp_path, text, side)
    with pytest.raises(DataError) as caught:
        PluginConfig(model="Mamba4Rec", dataset="bad", config_dict=fast_config(data_path=str(data)))
    assert message in str(caught.value), str(caught.value)
    assert not any((in_tmp / d).exists() for d in ("log", "saved", "log_tensorboard")), "nothing is written"


def test_good_rows_pass(tmp_path, in_tmp):
    data = write(tmp_path, lines())
    PluginConfig(model="Mamba4Rec", dataset="bad", config_dict=fast_config(data_path=str(data)))


def test_a_checked_file_is_read_again_only_when_it_changes(tmp_path, monkeypatch):
    from pathlib import Path

    from recbole_hyper.data import atomic_files

    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\t4\n")
    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp"}
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    header = atomic_files.read_header(path, "\t", "utf-8")
    atomic_files.check_rows(header, config, True)
    atomic_files.check_rows(header, config, True)
    assert reads.count(path) == 1
    # Changed (a row without its time): read again, and the error is found.
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\t\n2\t4\t5\n")
    with pytest.raises(DataError, match="line 3"):
        atomic_files.check_rows(header, config, True)
    assert reads.count(path) == 2
