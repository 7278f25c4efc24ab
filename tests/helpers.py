"""Shared test helpers: small, fast configurations on RecBole's bundled ml-100k, subprocess runners, references."""

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import recbole_hyper  # noqa: F401  (registers the models)
from recbole_hyper.ops import selective_scan_ref as reference_scan

REPO = Path(__file__).resolve().parents[1]

# Two threads at most; fewer when OMP_NUM_THREADS says so (e.g. beside a benchmark on a 2-core machine,
# where a second thread would wait on a busy core).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))

# Small enough that one epoch over ml-100k takes seconds on two CPU cores.
FAST = {
    "MAX_ITEM_LIST_LENGTH": 10,
    "hidden_size": 16,
    "d_state": 4,
    "train_batch_size": 512,
    "eval_batch_size": 4096,
    "epochs": 1,
    "show_progress": False,
    "state": "WARNING",
    "seed": 7,
}


def fast_config(**overrides):
    cfg = dict(FAST)
    cfg.update(overrides)
    return cfg


def prepare(model, config_dict=None, dataset="ml-100k"):
    """PluginConfig, dataset and the three dataloaders for ``model``."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_hyper.config import PluginConfig
    from recbole_hyper.data import create_dataset

    config = PluginConfig(model=model, dataset=dataset, config_dict=fast_config(**(config_dict or {})))
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    return config, data, train, valid, test


SEQ_LENGTHS = [5, 7, 4, 12, 6, 9]


def tiny(model, data_path, **cfg):
    base = {
        "data_path": data_path,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 10,
        "train_batch_size": 4,
        "dropout_prob": 0.0,
    }
    base.update(cfg)
    return prepare(model, base, dataset="tiny")


def run_cli(args, cwd):
    """Run ``run_recbole_hyper.py`` in a fresh process from ``cwd``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole_hyper.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_snippet(script: str, cwd, args: dict):
    """Run ``script`` (Python source that reads its JSON ``args`` from argv[1] and prints
    ``RESULT <json>``) in a fresh single-threaded process from ``cwd``.
    Returns (exit status, the parsed result, or the end of stderr when there is none)."""
    import json

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return proc.returncode, json.loads(line[len("RESULT "):])
    return proc.returncode, proc.stderr[-4000:]


def dict_config(config, **overrides):
    """A copy of a RecBole Config with some keys changed."""
    import copy

    new = copy.copy(config)
    new.final_config_dict = dict(config.final_config_dict, **overrides)
    return new


def reference_mamba(block, x: torch.Tensor) -> torch.Tensor:
    """Mamba-1's forward pass in mamba-ssm's (batch, channels, L) layout, float64."""
    p = {k: v.detach().double() for k, v in block.state_dict().items()}
    x = x.double()
    L = x.shape[1]
    xz = (x @ p["in_proj.weight"].T).transpose(1, 2)
    xs, z = xz.chunk(2, dim=1)
    xs = F.conv1d(xs, p["conv1d.weight"], p["conv1d.bias"], padding=block.d_conv - 1, groups=block.d_inner)
    xs = F.silu(xs[..., :L])
    x_dbl = xs.transpose(1, 2) @ p["x_proj.weight"].T
    dt, B, C = torch.split(x_dbl, [block.dt_rank, block.d_state, block.d_state], dim=-1)
    dt = (dt @ p["dt_proj.weight"].T).transpose(1, 2)
    y, _ = reference_scan(
        xs,
        dt,
        -torch.exp(p["A_log"]),
        B.transpose(1, 2),
        C.transpose(1, 2),
        D=p["D"],
        z=z,
        delta_bias=p["dt_proj.bias"],
        delta_softplus=True,
    )
    return y.transpose(1, 2) @ p["out_proj.weight"].T


def every_position(model, seq: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """A model's output at every position of ``seq`` up to the longest sequence, (batch, width, d):
    its ``forward`` with every position marked in ``target_mask``."""
    width = max(1, min(seq.shape[1], int(lens.max())))
    out = model(seq, lens, target_mask=torch.ones(seq.shape[0], width, dtype=torch.bool))
    return out.view(seq.shape[0], width, -1)


def train_tiny(data_path, model="Mamba4Rec", **settings):
    """Train ``model`` briefly on the tiny dataset through the runner; returns its best checkpoint."""
    from recbole_hyper.quick_start import run_recbole_hyper

    config = fast_config(data_path=data_path, load_col={"inter": ["user_id", "item_id", "timestamp"]},
                         MAX_ITEM_LIST_LENGTH=5, train_batch_size=8, **settings)
    return run_recbole_hyper(model, "tiny", config_dict=config, count_flops=False)["checkpoint"]
