"""Dataset settings ship and hold; the user's own data works; bad data gets one clear message."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recbole_hyper.config import PluginConfig, properties_dir
from recbole_hyper.data.atomic_files import DataError, DatasetNotFoundError
from recbole_hyper.registry import UnknownModelError, get_model_class
from tests.helpers import REPO, fast_config, run_cli

# The benchmark datasets (RecBole atomic files) sit beside the checkout in CI;
# RECBOLE_HYPER_DATASETS points elsewhere.
DATASETS = Path(os.environ.get("RECBOLE_HYPER_DATASETS", REPO.parent / "shared" / "datasets"))

# Published users / items / interactions after 5-core filtering, and the
# papers' MAX_ITEM_LIST_LENGTH.
PUBLISHED = {
    "ml-1m": (6040, 3416, 999611, 200),
    "amazon-beauty": (22363, 12101, 198502, 50),
    "amazon-sports-outdoors": (35598, 18357, 296337, 50),
    "amazon-toys-games": (19412, 11924, 167597, 50),
    "yelp": (30431, 20033, 316354, 50),
    "amazon-video-games": (24303, 10672, 231780, 50),
}


def yaml_files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


# ------------------------------------------------------------------ shipping
def test_properties_come_from_the_checkout_in_an_editable_install():
    assert properties_dir().resolve() == (REPO / "properties").resolve()
    assert set(PUBLISHED) <= {p.stem for p in (properties_dir() / "dataset").glob("*.yaml")}


@pytest.mark.slow
def test_wheel_ships_every_yaml_and_the_installed_package_finds_them(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(wheel_dir.glob("recbole_hyper-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = yaml_files(REPO / "properties")
    assert "dataset/ml-1m.yaml" in expected
    missing = [f for f in expected if f"recbole_hyper/properties/{f}" not in names]
    assert not missing, f"not in the wheel: {missing}"

    # Installed from the wheel (not the checkout), the same lookup finds them.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = "from recbole_hyper.config import properties_dir; print(properties_dir())"
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    found = Path(out.stdout.strip().splitlines()[-1])
    assert found.resolve().is_relative_to(target.resolve())
    assert yaml_files(found) == expected


@pytest.mark.slow
def test_no_file_of_the_source_tree_is_ignored_by_git():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(REPO)) for d in ("properties", "recbole_hyper", "tests") for p in (REPO / d).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")]
    proc = subprocess.run(["git", "check-ignore", *files], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip() == "", f"ignored by .gitignore: {proc.stdout}"


def test_docs_list_exactly_the_dataset_settings_that_ship():
    text = (REPO / "docs" / "datasets.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w.-]+)` \|", text, flags=re.M))
    shipped = {p.stem for p in (REPO / "properties" / "dataset").glob("*.yaml")}
    assert listed == shipped


# ---------------------------------------------------------- benchmark data
@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"benchmark datasets not found at {DATASETS}")
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_benchmark_dataset_matches_published_counts(name, in_tmp):
    """Built exactly as the runner builds it: the plugin's configuration and dataset class."""
    from recbole_hyper.data import create_dataset

    users, items, interactions, max_len = PUBLISHED[name]
    config = PluginConfig(model="Mamba4Rec", dataset=name, config_dict={"data_path": str(DATASETS), "state": "WARNING"})
    dataset = create_dataset(config)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (users, items, interactions)
    assert config["MAX_ITEM_LIST_LENGTH"] == max_len
    assert config["TIME_FIELD"] == "timestamp" and config["eval_args"]["order"] == "TO"
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert dataset.time_field == "timestamp" and "timestamp" in dataset.inter_feat


def test_ml1m_full_sequence_recipe_is_the_default(in_tmp, tmp_path):
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ml-1m.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\n")
    common = {"data_path": str(tmp_path)}
    full = PluginConfig(model="Mamba4Rec", dataset="ml-1m", config_dict=dict(common, train_mode="full_sequence"))
    assert (full["train_batch_size"], full["learning_rate"], full["lr_schedule"], full["epochs"]) == (32, 0.002, "cosine", 30)
    augmented = PluginConfig(model="Mamba4Rec", dataset="ml-1m", config_dict=common)
    assert (augmented["train_batch_size"], augmented["lr_schedule"], augmented["epochs"]) == (2048, "constant", 300)


# ------------------------------------------------------------ own datasets
def write_inter(root: Path, name: str, header: str, rows) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f"{name}.inter").write_text("\n".join([header, *rows]) + ("\n" if rows or header else ""))
    return str(root)


def own_rows(users=12, length=8, items=30):
    """Every user rates `length` distinct items, with a rating column the default load_col would drop."""
    rows = []
    for u in range(users):
        for t in range(length):
            rows.append(f"u{u}\ti{(u * 7 + t * 3) % items}\t{(t % 5) + 1}\t{t + 1}")
    return rows


OWN_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


@pytest.fixture
def own_data(tmp_path):
    return write_inter(tmp_path / "data", "mydata", OWN_HEADER, own_rows())


def test_own_dataset_loads_every_column_without_load_col(own_data, in_tmp):
    from recbole_hyper.data import create_dataset

    config = PluginConfig(model="Mamba4Rec", dataset="mydata", config_dict=fast_config(data_path=own_data))
    assert config["load_col"] == {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    dataset = create_dataset(config)
    assert dataset.inter_num == 12 * 8 and "timestamp" in dataset.inter_feat


def test_explicit_load_col_is_kept(own_data, in_tmp):
    from recbole_hyper.data import create_dataset

    load_col = {"inter": ["user_id", "item_id", "timestamp"]}
    config = PluginConfig(model="Mamba4Rec", dataset="mydata", config_dict=fast_config(data_path=own_data, load_col=load_col))
    assert config["load_col"] == load_col
    assert "rating" not in create_dataset(config).inter_feat


def test_explicit_load_col_without_time_is_reported(own_data, in_tmp):
    with pytest.raises(DataError, match="does not load the time field 'timestamp'"):
        PluginConfig(model="Mamba4Rec", dataset="mydata",
                    config_dict=fast_config(data_path=own_data, load_col={"inter": ["user_id", "item_id"]}))


@pytest.mark.slow
def test_own_dataset_through_the_runner(own_data, in_tmp):
    args = [f"--{k}={v}" for k, v in fast_config(data_path=own_data, MAX_ITEM_LIST_LENGTH=5).items()]
    proc = run_cli(["--model=Mamba4Rec", "--dataset=mydata", *args], in_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Mamba4Rec on mydata" in proc.stdout and "ndcg@10=" in proc.stdout


@pytest.mark.slow
def test_own_dataset_through_stock_run_recbole(own_data, in_tmp):
    from recbole.quick_start import run_recbole

    result = run_recbole(model="Mamba4Rec", dataset="mydata", config_dict=fast_config(data_path=own_data))
    # 12 users, each evaluated once on valid and once on test.
    assert set(result["test_result"]) >= {"hit@10", "ndcg@10"}


@pytest.mark.slow
def test_own_dataset_through_stock_objective_function(own_data, in_tmp):
    from recbole.quick_start import objective_function

    config = fast_config(model="Mamba4Rec", dataset="mydata", data_path=own_data)
    result = objective_function(config_dict=config, saved=False)
    assert result["valid_score_bigger"] is True
    assert set(result["test_result"]) >= {"hit@10", "ndcg@10"}


# ----------------------------------------------------------------- bad data
BAD = {
    "no_time": ("user_id:token\titem_id:token", ["u1\ti1"], "has no time column 'timestamp'"),
    "empty": ("", [], "is empty"),
    "header_only": ("user_id:token\titem_id:token\ttimestamp:float", [], "has a header but no interactions"),
    "no_types": ("user_id\titem_id\ttimestamp", ["u1\ti1\t1"], "must be RecBole's header"),
    "no_item": ("user_id:token\tmovie:token\ttimestamp:float", ["u1\ti1\t1"], "has no item column 'item_id'"),
    "no_user": ("uid:token\titem_id:token\ttimestamp:float", ["u1\ti1\t1"], "has no user column 'user_id'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_reported_before_loading(case, tmp_path, in_tmp):
    header, rows, expected = BAD[case]
    data_path = write_inter(tmp_path / "data", "bad", header, rows)
    with pytest.raises(DataError, match=re.escape(expected)) as err:
        PluginConfig(model="Mamba4Rec", dataset="bad", config_dict={"data_path": data_path})
    assert "bad.inter" in str(err.value)
    # The stock pipeline gets the same check for the plugin's models.
    from recbole.config import Config

    with pytest.raises(DataError, match=re.escape(expected)):
        Config(model="Mamba4Rec", dataset="bad", config_dict={"data_path": data_path})


def test_missing_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="Dataset 'nothing' not found"):
        PluginConfig(model="Mamba4Rec", dataset="nothing", config_dict={"data_path": str(tmp_path)})


@pytest.mark.parametrize(
    "case,extra",
    [("no_time", []), ("no_types", []), ("filtered", ["--user_inter_num_interval=[50,inf)"])],
)
@pytest.mark.slow
def test_bad_data_through_the_runner_exits_2_and_writes_nothing(case, extra, tmp_path, in_tmp):
    if case == "filtered":
        data_path = write_inter(tmp_path / "data", "bad", OWN_HEADER, own_rows())
        expected = "Every interaction of 'bad' was filtered away (user_inter_num_interval='[50,inf)')"
    else:
        header, rows, expected = BAD[case]
        data_path = write_inter(tmp_path / "data", "bad", header, rows)
    proc = run_cli(["--model=Mamba4Rec", "--dataset=bad", f"--data_path={data_path}", *extra], in_tmp)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        next(line for line in proc.stderr.splitlines() if expected in line)
    ]  # one message
    assert not (in_tmp / "saved").exists()
    assert sorted(p.name for p in Path(data_path, "bad").iterdir()) == ["bad.inter"]  # no cache written


def test_filters_that_remove_everything_are_reported_for_baselines_too(tmp_path, in_tmp):
    from recbole_hyper.data import create_dataset

    data_path = write_inter(tmp_path / "data", "mydata", OWN_HEADER, own_rows())
    config = PluginConfig(model="SASRec", dataset="mydata",
                         config_dict={"data_path": data_path, "item_inter_num_interval": "[100,inf)"})
    with pytest.raises(DataError, match="item_inter_num_interval='\\[100,inf\\)'"):
        create_dataset(config)


# ------------------------------------------------------------- model names
def test_close_model_names_are_suggested_once():
    with pytest.raises(UnknownModelError) as err:
        get_model_class("Mamba4rec")
    hint = re.search(r"Did you mean (.*)\?", str(err.value)).group(1).split(", ")
    assert hint[0] == "Mamba4Rec" and len(hint) == len(set(hint))
