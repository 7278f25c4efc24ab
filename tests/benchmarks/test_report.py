"""The benchmark report's arithmetic on hand-made runs (values computed by hand)."""

import pytest

from benchmarks.grid import report


def _run(model, mode, epochs, values, train_s=10.0, eval_s=4.0, best_epoch=None, tag=None):
    history = [{"epoch": e, "valid_ndcg@10": 0.1, "train_s": train_s, "eval_s": eval_s} for e in epochs]
    return {
        "model": model, "mode": mode, "dataset": "toy", "seed": 1, "history": history,
        "best_epoch": epochs[-1] if best_epoch is None else best_epoch, "train_s_per_epoch": train_s,
        "test": {m: 0.1 for m in report.METRICS}, "best_valid": {"ndcg@10": 0.1}, "wall_s": 1.0,
        "train_batch_size": 8, "MAX_ITEM_LIST_LENGTH": 5,
        "per_user_test_ndcg@10": {"user_ids": list(range(len(values))), "values": values},
        **({"tag": tag} if tag else {}),
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


def test_a_tagged_variant_is_its_own_row_against_its_tagged_baseline_and_its_untagged_self():
    one_layer = [0.1, 0.2, 0.3, 0.4]
    two_layers = [0.3, 0.4, 0.2, 0.6]  # +0.125 on average against one layer
    hymoe_two = [0.4, 0.5, 0.3, 0.7]  # +0.1 for every user against Mamba4Rec with 2 layers
    runs = [
        _run("Mamba4Rec", "full_sequence", [0], one_layer),
        _run("Mamba4Rec", "full_sequence", [0], two_layers, tag="2layers"),
        _run("HyMoERec", "full_sequence", [0], hymoe_two, tag="2layers"),
        _run("SASRec", "full_sequence", [0], [0.0] * 4),
    ]
    rows = {r["label"]: r for r in report.build(runs, {})}
    assert set(rows) == {"Mamba4Rec", "Mamba4Rec [2layers]", "HyMoERec [2layers]", "SASRec"}
    assert rows["Mamba4Rec"]["ndcg@10"] == (0.1, 0.0)  # the tagged run is not averaged in
    tagged = rows["Mamba4Rec [2layers]"]
    # No tagged SASRec run: the untagged one is the baseline.
    assert tagged["significance"]["baseline"] == "SASRec (full_sequence)"
    assert tagged["significance"]["mean_diff"] == pytest.approx(0.375)
    assert tagged["vs_untagged"]["baseline"] == "Mamba4Rec (full_sequence)"
    assert tagged["vs_untagged"]["mean_diff"] == pytest.approx(0.125)
    hymoe = rows["HyMoERec [2layers]"]
    assert hymoe["significance"]["baseline"] == "Mamba4Rec [2layers] (full_sequence)"
    assert hymoe["significance"]["mean_diff"] == pytest.approx(0.1)
    assert "vs_untagged" not in hymoe  # no untagged HyMoERec run
    table = report.markdown(report.build(runs, {}))
    assert "| Mamba4Rec [2layers] | full_sequence |" in table
    assert "+0.1250 vs Mamba4Rec (full_sequence)" in table


def test_report_command_reads_several_folders_and_skips_its_own_summary(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import json

    main, variants = tmp_path / "runs", tmp_path / "variants"
    main.mkdir()
    variants.mkdir()
    (main / "a.json").write_text(json.dumps(
        {**_run("Mamba4Rec", "full_sequence", [0, 1], [0.1, 0.2, 0.3]), "data_sha256": {"toy.inter": "9f86d081" + "0" * 56}}
    ))
    (variants / "b.json").write_text(
        json.dumps(_run("Mamba4Rec", "full_sequence", [0, 1], [0.2, 0.3, 0.4], tag="2layers"))
    )
    gpu_run = _run("SASRec", "augmented", [0], [0.1, 0.1, 0.1], tag="gpu")
    (variants / "c.json").write_text(json.dumps({**gpu_run, "device": "cuda: NVIDIA H100 80GB HBM3"}))
    (main / "d.json").write_text(json.dumps({**_run("SASRec", "full_sequence", [0], [0.0, 0.0, 0.0]), "torch": "2.13.0+cpu"}))
    (variants / "summary.json").write_text(json.dumps([{"model": "x"}]))  # a report's own output
    argv = ["report.py", "--runs", str(main), str(variants), "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    report.main()
    table = (tmp_path / "table.md").read_text()
    assert "| toy | Mamba4Rec | full_sequence | 1 |" in table
    assert "| toy | Mamba4Rec [2layers] | full_sequence | 1 |" in table
    assert "+0.1000 vs Mamba4Rec (full_sequence)" in table
    # The device column: the GPU's name, 'cpu' from a CPU torch build, else 'not recorded';
    # the data column: the .inter file's sha256 in short, else 'not recorded'.
    lines = [line for line in table.splitlines() if line.startswith("| toy ")]
    rows = {line.split(" | ")[1]: line.rstrip(" |").rsplit(" | ", 2)[-2:] for line in lines}
    assert rows["SASRec [gpu]"][0] == "NVIDIA H100 80GB HBM3"
    assert rows["SASRec"][0] == "cpu"
    assert rows["Mamba4Rec"] == ["not recorded", "9f86d081"]
    assert rows["SASRec"][1] == "not recorded"
    assert (tmp_path / "valid_ndcg_per_epoch.png").stat().st_size > 0
    assert (tmp_path / "ndcg_bars.png").stat().st_size > 0


def test_a_run_trained_past_early_stopping_is_marked_in_its_row():
    marked = {**_run("Mamba4Rec", "full_sequence", [0, 1], [0.2, 0.3], tag="longer"),
              "trained_past_early_stopping": {"epoch": 0}}
    runs = [marked, {**_run("Mamba4Rec", "full_sequence", [0], [0.1, 0.2]), "stopped_by_budget": True}]
    lines = report.markdown(report.build(runs, {})).splitlines()
    (longer,) = [line for line in lines if "[longer]" in line]
    (plain,) = [line for line in lines if "| Mamba4Rec |" in line]
    assert "(seeds 1 trained past early stopping)" in longer and "time budget hit" not in longer
    assert "(time budget hit)" in plain and "past early stopping" not in plain
