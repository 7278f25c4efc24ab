"""recbole_hyper.compat's fixes for the current stack: NumPy 2's removed aliases, pandas 3's
missing-value fill, SciPy's removed dok_matrix._update, RecBole's quick_start without ray.
CI runs these on NumPy 1 / pandas 2 and on the latest NumPy / pandas."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from recbole_hyper import compat
from tests.helpers import REPO, prepare


def fresh_process(script: str, cwd) -> list:
    """Run ``script`` in a new interpreter that sees only the checkout; returns its printed words."""
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_numpy_aliases_get_their_numpy1_meanings_when_missing(monkeypatch):
    for alias in compat.NUMPY1_ALIASES:
        monkeypatch.delattr(np, alias, raising=False)
    assert sorted(compat.restore_numpy_aliases()) == sorted(compat.NUMPY1_ALIASES)
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    assert compat.restore_numpy_aliases() == [], "present aliases are left alone"


def test_recbole_missing_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a))
    with pytest.raises(compat.StackError, match="--no-deps recbole==1.2.1"):
        compat.check_stack()


@pytest.fixture
def with_missing_values(tmp_path):
    """Five users; empty cells in a token, a float and a token_seq column."""
    folder = tmp_path / "gaps"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\ttimestamp:float\tshop:token\tprice:float\ttags:token_seq"]
    for u in range(1, 6):
        for t in range(1, 7):
            item = (u * 3 + t) % 11 + 1
            shop = "" if (u + t) % 4 == 0 else f"s{t % 3}"
            price = "" if (u * t) % 5 == 0 else f"{u + t}.5"
            tags = "" if t % 3 == 0 else f"a{t} b{u}"
            rows.append(f"u{u}\ti{item}\t{t}\t{shop}\t{price}\t{tags}")
    (folder / "gaps.inter").write_text("\n".join(rows) + "\n")
    return tmp_path, rows[1:]


def test_missing_values_are_filled_as_recbole_documents(with_missing_values, in_tmp):
    """Token -> [PAD] (0), float -> the column's mean, token_seq -> empty; on pandas 2 and 3 alike."""
    data_path, rows = with_missing_values
    config, dataset, _, _, _ = prepare(
        "Mamba4Rec", {"data_path": str(data_path), "load_col": None, "MAX_ITEM_LIST_LENGTH": 5}, dataset="gaps"
    )
    feat = dataset.inter_feat
    cells = [r.split("\t") for r in rows]
    prices = [float(c[4]) for c in cells if c[4]]
    # Rows in the dataset's order (by user, then time): recover each row's raw cells by (user, time).
    raw = {(c[0], float(c[2])): c for c in cells}
    users = dataset.id2token("user_id", feat["user_id"].numpy())
    for i, (user, time) in enumerate(zip(users, feat["timestamp"].tolist())):
        shop, price, tags = raw[(user, time)][3:]
        shop_id = int(feat["shop"][i])
        assert (shop_id == 0) == (shop == ""), (user, time)
        if shop:
            assert dataset.id2token("shop", shop_id) == shop
        expected = float(price) if price else np.mean(prices)
        assert float(feat["price"][i]) == pytest.approx(expected, rel=1e-6)
        got_tags = [t for t in feat["tags"][i].tolist() if t != 0]
        assert list(dataset.id2token("tags", got_tags)) == tags.split()
    assert not torch.isnan(feat["price"]).any()


@pytest.mark.parametrize("model", ["LightGCN", "NGCF", "NCL", "GCMC", "SpectralCF"])
def test_recbole_graph_models_build_their_adjacency_and_train_a_step(model, tiny_dataset, in_tmp):
    from recbole_hyper.registry import get_model_class

    config, dataset, train, _, _ = prepare(
        model,
        {"data_path": tiny_dataset, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
         "train_batch_size": 8, "embedding_size": 8},
        dataset="tiny",
    )
    torch.manual_seed(0)
    net = get_model_class(model)(config, train._dataset)  # builds the adjacency with dok_matrix._update
    if model == "NCL":  # its loss needs k-means clusters from faiss (optional): propagate over the graph only
        user_emb, item_emb, _ = net.forward()
        loss = user_emb.square().sum() + item_emb.square().sum()
    else:
        loss = net.calculate_loss(next(iter(train)))
    loss = sum(loss) if isinstance(loss, tuple) else loss
    loss.backward()
    assert torch.isfinite(loss)


def test_stock_quick_start_imports_without_ray(tmp_path):
    """ray unimportable (as on Python 3.12, or with setuptools >= 82): RecBole's quick_start still
    imports, says so once, and ray stays absent for other code."""
    script = (
        "import sys, warnings\n"
        "sys.modules['ray'] = None  # import ray fails\n"
        "import recbole_hyper\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    from recbole.quick_start import objective_function, run_recbole\n"
        "    import recbole.quick_start.quick_start as qs\n"
        "qs.tune.report(ndcg=1.0)\n"
        "print(sum('ray cannot be imported' in str(w.message) for w in seen), sys.modules['ray'] is None)\n"
    )
    assert fresh_process(script, tmp_path) == ["1", "True"]


def test_hyperopt_imports_without_pkg_resources(tmp_path):
    """setuptools >= 82 has no pkg_resources, which hyperopt 0.2.5 imports for resource_string."""
    script = (
        "import sys\n"
        "sys.modules['pkg_resources'] = None  # import pkg_resources fails\n"
        "import recbole_hyper\n"
        "import hyperopt.atpe as atpe\n"
        "data = atpe.pkg_resources.resource_string('hyperopt', 'atpe_models/scaling_model.json')\n"
        "print(data[:1] == b'{', sys.modules['pkg_resources'] is None)\n"
    )
    assert fresh_process(script, tmp_path) == ["True", "True"]
