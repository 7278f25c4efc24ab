"""Distributed data-parallel training on CPUs (gloo): two real processes.

The reference is a single-process run of the same seed and global batch:
with dropout off, the two-process run must reach the same best validation
score and test metrics, with weights equal up to float summation order.
RecBole's own scheme (a shuffled, padded ``DistributedSampler`` share per
process and averaged per-process metrics) fails this on ml-100k: its 943
users do not split evenly and its shuffle is not the single process's.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_hyper.compat import load_checkpoint
from recbole_hyper.config.params import HyperParameterError
from recbole_hyper.training import distributed
from tests.helpers import REPO, fast_config, run_cli, run_snippet

# End-to-end: every test here trains through the runner or in a fresh process.
pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys
import torch
from recbole_hyper.quick_start import run


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    result = run(args.get("model"), args.get("dataset"), config_dict=args["config"], nproc=args["nproc"], port=args["port"],
                 resume=args.get("resume"))
    print("RESULT " + json.dumps({"test": result["test_result"], "best": result["best_valid_score"],
                                  "checkpoint": result["checkpoint"]}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_script(cwd: Path, **args):
    cwd.mkdir(parents=True, exist_ok=True)
    rc, result = run_snippet(SCRIPT, cwd, dict(args, port=str(free_port())))
    assert rc == 0 and isinstance(result, dict), f"exit {rc}:\n{result}"
    return result


def written(folder: Path):
    return sorted(p.name.split("-")[0] + p.name[p.name.index(".") :] for p in (folder / "saved").iterdir())


@pytest.mark.parametrize("mode", ["full_sequence", "augmented"])
def test_two_processes_equal_one_process(mode, tmp_path):
    config = fast_config(epochs=2, dropout_prob=0.0, train_mode=mode, train_batch_size=512 if mode == "augmented" else 64)
    one = run_script(tmp_path / "one", model="Mamba4Rec", dataset="ml-100k", config=config, nproc=1)
    two = run_script(tmp_path / "two", model="Mamba4Rec", dataset="ml-100k", config=config, nproc=2)
    assert two["best"] == one["best"]
    assert two["test"] == one["test"]
    a = load_checkpoint(tmp_path / "one" / one["checkpoint"])["state_dict"]
    b = load_checkpoint(tmp_path / "two" / two["checkpoint"])["state_dict"]
    for key in a:  # the same gradients, summed in another order
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # Only rank 0 writes: one best checkpoint, one last state, one serving file.
    expected = ["Mamba4Rec.last.pth", "Mamba4Rec.pth", "Mamba4Rec.pth.serving.pt"]
    assert written(tmp_path / "two") == written(tmp_path / "one") == expected


def test_distributed_run_resumes_like_one_process(tmp_path):
    """2 processes for 1 epoch, then --resume with 2 processes for a 2nd epoch: as one process for 2 epochs."""
    config = fast_config(epochs=1, dropout_prob=0.0, train_mode="full_sequence", train_batch_size=64)
    first = run_script(tmp_path / "two", model="Mamba4Rec", dataset="ml-100k", config=config, nproc=2)
    last = str(tmp_path / "two" / first["checkpoint"]).replace(".pth", ".last.pth")
    resumed = run_script(tmp_path / "two", config={"epochs": 2}, nproc=2, resume=last)
    one = run_script(tmp_path / "one", model="Mamba4Rec", dataset="ml-100k", config=dict(config, epochs=2), nproc=1)
    assert (resumed["best"], resumed["test"]) == (one["best"], one["test"])
    assert resumed["best"] != first["best"]  # the second epoch changed the model


@pytest.mark.parametrize(
    "model, extra",
    [
        ("HM2Rec", dict(n_experts=2)),  # graph encoder, RiemannianAdam, MoE
        ("HyMoERec", dict(train_mode="full_sequence")),
        ("HMamba", dict(train_mode="full_sequence")),
        ("SASRec", dict(train_mode="full_sequence")),  # RecBole's baseline with the per-position loss
        # RecBole's baseline with its own masked rows (enough masks that no rank's batch has none).
        ("BERT4Rec", dict(mask_ratio=0.5, train_batch_size=64)),
    ],
)
def test_every_kind_of_model_trains_in_two_processes(model, extra, tmp_path, tiny_dataset):
    config = fast_config(
        epochs=1,
        data_path=tiny_dataset,
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
        **{"train_batch_size": 8, "topk": [5, 10], **extra},  # the tiny catalog has 30 items
    )
    result = run_script(tmp_path, model=model, dataset="tiny", config=config, nproc=2)
    assert 0.0 <= result["test"]["hit@10"] <= 1.0
    assert len(list((tmp_path / "saved").glob("*.last.pth"))) == 1


def test_global_batches_are_the_single_process_batches():
    n, batch = 103, 10
    order = torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(3))
    single = torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()
    for world in (2, 3, 4):
        parts = [
            list(distributed.GlobalBatchShards(
                torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(3)), batch, r, world
            ))
            for r in range(world)
        ]
        assert all(len(p) == len(parts[0]) == 11 for p in parts)  # same number of steps on every rank
        for b in range(11):
            union, expected = sum((p[b] for p in parts), []), single[b * batch : (b + 1) * batch]
            if len(expected) >= world:
                assert sorted(union) == sorted(expected)
            else:  # 3 rows for 4 ranks: one row is repeated
                assert set(union) == set(expected) and len(union) == world
    assert len(distributed.GlobalBatchShards(order, batch, 0, 2)) == 11
    # A last batch with fewer rows than ranks: a rank without a row repeats one, never an empty batch.
    last = [list(distributed.GlobalBatchShards(range(21), 10, r, 3))[-1] for r in range(3)]
    assert last == [[20], [20], [20]]


def test_evaluation_rows_are_split_without_padding():
    for n, world in ((943, 2), (10, 3), (2, 3)):
        rows = [i for r in range(world) for batch in distributed.RowShard(n, 4, r, world) for i in batch]
        assert rows == list(range(n))


def test_backend_choice_and_launch_checks():
    if not torch.cuda.is_available():
        assert distributed.resolve_backend("auto", 2) == "gloo"
        with pytest.raises(HyperParameterError, match="gloo"):
            distributed.resolve_backend("nccl", 2)
    assert distributed.resolve_backend("gloo", 2) == "gloo"
    with pytest.raises(HyperParameterError, match="ddp_backend"):
        distributed.resolve_backend("mpi", 2)
    assert distributed.check_launch(2, -1, 0) == 2
    assert distributed.check_launch(2, 4, 2) == 4
    for nproc, world, offset in ((0, -1, 0), (2, 1, 0), (2, 4, 3)):
        with pytest.raises(HyperParameterError):
            distributed.check_launch(nproc, world, offset)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "args, message",
    [
        (["--nproc=2", "--ddp_backend=nccl"], "needs 2 CUDA GPUs"),
        (["--nproc=2", "--world_size=3", "--group_offset=2"], "group_offset"),
        (["--nproc=2", "--ddp_backend=tcp"], "ddp_backend"),
    ],
)
def test_bad_launch_exits_2_with_one_message(args, message, tmp_path):
    proc = run_cli(["--model=Mamba4Rec", "--dataset=ml-100k", "--epochs=1", *args], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "saved").exists()


def test_two_machines_only_the_first_writes(tmp_path):
    """docs/distributed.md's two-machine commands, with one process per "machine" (two folders on this host)."""
    port = free_port()
    common = [
        sys.executable, str(REPO / "run_recbole_hyper.py"), "--model=Mamba4Rec", "--dataset=ml-100k",
        "--MAX_ITEM_LIST_LENGTH=10", "--hidden_size=16", "--d_state=4", "--epochs=1", "--train_mode=full_sequence",
        "--state=WARNING", "--show_progress=False", "--nproc=1", "--world_size=2", "--ip=localhost", f"--port={port}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = {}
    for offset, name in enumerate(("first", "second")):
        (tmp_path / name).mkdir()
        procs[name] = subprocess.Popen(
            [*common, f"--group_offset={offset}"], cwd=tmp_path / name, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
    out = {name: proc.communicate(timeout=600) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, out[name][1][-3000:]
    assert "test " in out["first"][0] and "test " not in out["second"][0]  # rank 0 prints the result
    assert len(list((tmp_path / "first" / "saved").glob("*.pth"))) == 2  # best checkpoint and last state
    assert not list((tmp_path / "second").glob("saved/*"))  # RecBole's trainer makes the folder, nothing is in it
