"""Fixtures shared by every test folder (helpers live in tests/helpers.py), and the ``slow`` marker."""

import numpy as np
import pytest

from tests.helpers import SEQ_LENGTHS


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary folder: RecBole writes log/, saved/ and log_tensorboard/ there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Atomic files of a small dataset: a handful of users, positions as timestamps."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "tiny"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, n in enumerate(SEQ_LENGTHS, start=1):
        items = rng.choice(np.arange(1, 31), size=n, replace=False)
        lines += [f"u{u}\ti{item}\t{t}" for t, item in enumerate(items, start=1)]
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n")
    return str(root)


