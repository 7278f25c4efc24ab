"""The benchmark report's arithmetic on hand-made runs (values computed by hand)."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_report", REPO / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _run(model, mode, epochs, values, train_s=10.0, eval_s=4.0, best_epoch=None):
    history = [{"epoch": e, "valid_ndcg@10": 0.1, "train_s": train_s, "eval_s": eval_s} for e in epochs]
    return {
        "model": model, "mode": mode, "dataset": "toy", "seed": 1, "history": history,
        "best_epoch": epochs[-1] if best_epoch is None else best_epoch, "train_s_per_epoch": train_s,
        "test": {m: 0.1 for m in report.METRICS}, "best_valid": {"ndcg@10": 0.1}, "wall_s": 1.0,
        "train_batch_size": 8, "MAX_ITEM_LIST_LENGTH": 5,
        "per_user_test_ndcg@10": {"user_ids": list(range(len(values))), "values": values},
    }


def test_epoch_time_counts_validation_once_per_eval_step():
    # Validated every epoch: 10 s training + 4 s validation.
    assert report.epoch_time(_run("Mamba4Rec", "full_sequence", [0, 1, 2], [0.0])) == pytest.approx(14.0)
    # eval_step 2 (epochs 1, 3, 5 recorded): 10 s + 4 s / 2 per epoch; time to best (epoch 5) = 6 x 12 s.
    run = _run("Mamba4Rec", "full_sequence", [1, 3, 5], [0.0])
    assert report.epoch_time(run) == pytest.approx(12.0)
    assert report.time_to_best(run) == pytest.approx(72.0)


def test_first_model_is_tested_against_sasrec_in_the_same_mode():
    ours = [0.5, 0.4, 0.3, 0.6, 0.2, 0.7]
    sas_full = [0.1, 0.2, 0.1, 0.3, 0.1, 0.2]  # mean difference 0.2833...
    sas_aug = [0.5, 0.4, 0.3, 0.6, 0.2, 0.7]
    runs = [
        _run("Mamba4Rec", "full_sequence", [0], ours),
        _run("SASRec", "full_sequence", [0], sas_full),
        _run("SASRec", "augmented", [0], sas_aug),
        _run("HyMoERec", "augmented", [0], ours),
        _run("Mamba4Rec", "augmented", [0], [v - 0.1 for v in ours]),
    ]
    rows = {(r["model"], r["mode"]): r for r in report.build(runs, {})}
    sig = rows[("Mamba4Rec", "full_sequence")]["significance"]
    assert sig["baseline"] == "SASRec (full_sequence)"
    assert sig["mean_diff"] == pytest.approx((sum(ours) - sum(sas_full)) / 6)
    assert rows[("Mamba4Rec", "augmented")]["significance"]["baseline"] == "SASRec (augmented)"
    # The other models against Mamba4Rec in their own mode: +0.1 for every user.
    sig = rows[("HyMoERec", "augmented")]["significance"]
    assert sig["baseline"] == "Mamba4Rec (augmented)"
    assert sig["mean_diff"] == pytest.approx(0.1)


def test_first_model_falls_back_to_the_augmented_baseline():
    runs = [
        _run("Mamba4Rec", "full_sequence", [0], [0.3, 0.4, 0.5]),
        _run("SASRec", "augmented", [0], [0.1, 0.1, 0.2]),
    ]
    rows = {(r["model"], r["mode"]): r for r in report.build(runs, {})}
    assert rows[("Mamba4Rec", "full_sequence")]["significance"]["baseline"] == "SASRec (augmented)"
