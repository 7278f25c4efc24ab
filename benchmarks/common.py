"""What the benchmark scripts share: run metadata, timing, worker processes, stand-in objects.

* :func:`run_metadata`: torch version, threads, machine and the script's
  arguments (minus folders of the machine), for every result file;
  :func:`device_name`: what ran it ('cpu' or 'cuda: <the GPU's name>').
* :func:`sync`, :func:`median_time`: wall-clock timing that waits for the
  device (CUDA kernels run asynchronously).
* :func:`spawn_worker` / :func:`worker_main`: one measurement per process
  (a fresh process has its own peak memory and no state of the previous
  run): the parent writes a spec file, the worker writes its JSON record
  atomically, the parent reads it back.
* :class:`ConfigStub`, :class:`DatasetStub`: what a model's constructor reads
  from a RecBole config and dataset, for benchmarks that build models
  without loading data.
* :func:`add_data_path`: the one spelling of the datasets folder option;
  :func:`module_command`: how one benchmark starts another (``python -m``,
  from any working directory).

The scripts run as modules from the repository root (``python -m
benchmarks.perf.bench_scan``); ``REPO``, ``RESULTS`` and ``CONFIGS`` are their folders.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RESULTS = BENCHMARKS / "results"
CONFIGS = BENCHMARKS / "configs"

# Arguments that name folders or files of the machine, not settings of a result.
PRIVATE_ARGS = ("out", "data_path", "worker", "runs")


def run_metadata(args=None) -> dict:
    """torch version, threads, machine, processor and the arguments of a run."""
    import torch

    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    if args is not None:
        meta["args"] = {k: v for k, v in vars(args).items() if k not in PRIVATE_ARGS}
    return meta


def device_name(device) -> str:
    """What ran a measurement: 'cpu' or the GPU's name (e.g. 'cuda: NVIDIA H100 80GB HBM3')."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def sync(device=None) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], repeats: int, device=None, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def module_command(module: str):
    """(argv, env) that run ``python -m module`` from any working directory."""
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + path if path else ""))
    return [sys.executable, "-m", module], env


def spawn_worker(module: str, spec: dict, out_file: Path, cwd=None, capture: bool = False):
    """Run ``python -m module --worker SPEC OUT`` in a new process; returns (process, record or None).

    The spec is written next to ``out_file`` and removed afterwards; the
    record is the JSON the worker wrote to ``out_file`` (None if it failed).
    With ``capture`` the worker's output is kept in the process object
    instead of being shown.
    """
    out_file = Path(out_file)
    spec_file = out_file.with_suffix(".spec")
    spec_file.write_text(json.dumps(spec))
    try:
        command, env = module_command(module)
        proc = subprocess.run(
            [*command, "--worker", str(spec_file), str(out_file)],
            cwd=None if cwd is None else str(cwd),
            capture_output=capture,
            text=True,
            env=dict(env, PYTHONUNBUFFERED="1"),  # a worker's progress shows as it goes
        )
    finally:
        spec_file.unlink(missing_ok=True)
    record = json.loads(out_file.read_text()) if proc.returncode == 0 and out_file.exists() else None
    return proc, record


def worker_main(paths, measure: Callable[[dict], dict]) -> int:
    """The worker side of :func:`spawn_worker`: ``measure(spec)``, written atomically."""
    spec_path, out_path = paths
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    write_json(out_path, measure(json.loads(Path(spec_path).read_text())))
    return 0


def write_json(path, obj, indent=None) -> None:
    """``obj`` as JSON at ``path``, through a temporary file: complete or absent, never half-written."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    tmp.replace(path)


def parse_settings(items) -> dict:
    """``KEY=VALUE`` strings (a script's ``--set``) as a dict; values read as JSON where they are JSON."""
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def add_data_path(parser, help: Optional[str] = None) -> None:
    """``--data-path`` (also ``--data_path``, RecBole's key): the folder of <dataset>/<dataset>.inter.

    Read as an absolute path: workers run in their own folders, where a relative one would not resolve.
    """
    parser.add_argument(
        "--data-path", "--data_path", dest="data_path", default=None,
        type=lambda p: str(Path(p).expanduser().resolve()),
        help=help or "folder holding <dataset>/<dataset>.inter (RecBole's data_path)",
    )


class ConfigStub(dict):
    """A RecBole ``Config`` stand-in: missing keys read as None."""

    def __getitem__(self, key):
        return self.get(key)


class DatasetStub:
    """What a model's constructor reads from a RecBole dataset: counts, ``config``
    and (for HM2Rec's graph) training rows made of (user, item) edges."""

    def __init__(self, counts: dict, edges=None, config=None):
        import torch
        from recbole.data.interaction import Interaction

        self.counts = dict(counts)
        self.config = config
        if edges is not None:
            self.inter_feat = Interaction(
                {
                    "user_id": torch.as_tensor(edges[:, 0]),
                    "item_id": torch.as_tensor(edges[:, 1]),
                    "item_id_list": torch.zeros(len(edges), 1, dtype=torch.long),
                }
            )

    def num(self, field):
        return self.counts[field]
