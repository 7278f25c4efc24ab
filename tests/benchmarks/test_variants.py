"""benchmarks.studies.variants: the ladder adds one component per rung, cells and tables."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from scipy.stats import wilcoxon

from benchmarks.common import parse_settings
from benchmarks.studies import variants

REPO = Path(__file__).resolve().parents[2]
HM2REC_DEFAULTS = {
    key: value for key, value in yaml.safe_load((REPO / "properties" / "model" / "HM2Rec.yaml").read_text()).items()
    if key in ("use_graph", "use_hyperbolic", "use_vgae", "rope_mode", "use_moe")
}


def components(settings):
    """The components a set of HM2Rec settings switches on (read independently of the study's labels)."""
    cfg = {**HM2REC_DEFAULTS, **parse_settings(settings)}
    on = set()
    if cfg["use_moe"]:
        on.add("moe")
    if cfg["rope_mode"] != "none":
        on.add("rope")
    if cfg["use_graph"]:
        on.add("graph")
        if cfg["use_hyperbolic"]:
            on.add("hyperbolic")
        if cfg["use_vgae"]:
            on.add("vgae")
    return on


def test_ladder_starts_at_mamba4rec_and_adds_one_component_per_rung():
    rungs = list(variants.LADDER.variants.values())
    assert components(rungs[0].settings) == set()  # graph, RoPE and MoE off: Mamba4Rec
    assert components(rungs[-1].settings) == {"moe", "rope", "graph", "hyperbolic", "vgae"}  # HM2Rec's defaults
    added = []
    for before, after in zip(rungs, rungs[1:]):
        a, b = components(before.settings), components(after.settings)
        assert a < b, (before.label, after.label)
        added.append(b - a)
    assert added == [{"moe"}, {"rope"}, {"graph"}, {"hyperbolic"}, {"vgae"}]
    assert all(v.model == "HM2Rec" for v in rungs)


def _run(tag, seed, values, model="HM2Rec", valid=0.1):
    return {
        "model": model, "tag": tag, "dataset": "toy", "seed": seed, "mode": "full_sequence",
        "history": [{"epoch": 0, "valid_ndcg@10": valid, "train_s": 10.0, "eval_s": 2.0}],
        "best_epoch": 0, "epochs_max": 5, "train_batch_size": 8, "threads": 1,
        "best_valid": {"ndcg@10": valid}, "test": {m: sum(values) / len(values) for m in variants.METRICS},
        "per_user_test_ndcg@10": {"user_ids": list(range(len(values))), "values": values},
    }


def test_summary_tests_each_rung_against_the_previous_and_the_first():
    base = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    moe = [v + d for v, d in zip(base, [0.01, 0.03, -0.02, 0.05, 0.04, 0.02, 0.06, 0.01])]
    rope_seeds = ([v + 0.1 for v in moe], [v + 0.3 for v in moe])  # two seeds: mean +0.2 over moe
    runs = [_run("l0_mamba4rec_x", 1, base), _run("l1_moe_x", 1, moe),
            _run("l2_rope_x", 1, rope_seeds[0]), _run("l2_rope_x", 2, rope_seeds[1]),
            _run("l1_moe_x", 1, base, model="Mamba4Rec"),  # another model's cell: not the rung
            _run("l1_moe", 1, base)]  # another suffix: not this table
    rows = {r["variant"]: r for r in variants.summarise(variants.LADDER, runs, suffix="x")}
    assert list(rows) == ["l0_mamba4rec", "l1_moe", "l2_rope"]
    assert rows["l0_mamba4rec"]["tests"] == []
    (t,) = rows["l1_moe"]["tests"]
    assert t["against"] == "l0_mamba4rec"
    assert t["ndcg@10_diff"] == pytest.approx(sum(m - b for m, b in zip(moe, base)) / 8)
    assert t["p"] == pytest.approx(wilcoxon(moe, base).pvalue)
    previous, first = rows["l2_rope"]["tests"]
    assert previous["against"] == "l1_moe" and previous["ndcg@10_diff"] == pytest.approx(0.2)
    assert first["against"] == "l0_mamba4rec"
    assert first["ndcg@10_diff"] == pytest.approx(0.2 + sum(m - b for m, b in zip(moe, base)) / 8)
    assert rows["l2_rope"]["seeds"] == [1, 2]
    text = variants.markdown(variants.LADDER, list(rows.values()))
    assert "| + MoE |" in text and "vs l0_mamba4rec" in text


def test_cells_take_the_datasets_own_schedule_or_the_cpu_config():
    args = SimpleNamespace(datasets=["ml-1m", "ml-100k"], seeds=[7], variants=["l0_mamba4rec"], suffix="layers2",
                           out=Path("out"), data_path="data", threads=1, set=["num_layers=2"])
    (d1, ml1m), (d2, ml100k) = variants.commands(variants.LADDER, args)
    assert "--config" not in ml1m  # ML-1M's full_sequence_defaults: 30 epochs, cosine, validation every 2
    assert ml100k[ml100k.index("--config") + 1].endswith("cpu.yaml")
    for cmd in (ml1m, ml100k):
        assert cmd[cmd.index("--tag") + 1] == "l0_mamba4rec_layers2"
        assert cmd[cmd.index("--set") + 1:] == ["use_graph=false", "rope_mode=none", "use_moe=false", "num_layers=2"]
        assert cmd[cmd.index("--models") + 1] == "HM2Rec"


@pytest.mark.parametrize("args,message", [
    (["--set", "num_layers=2"], "name the change with --suffix"),
    (["--variants", "l9"], "has no variant l9"),
])
def test_bad_arguments_are_one_line_and_status_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.studies.variants", "run", "ladder", "--dry-run", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
