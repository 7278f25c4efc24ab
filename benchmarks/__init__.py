"""Benchmarks of recbole-hyper, run from the repository root as modules:

* ``benchmarks.grid``: the reproduction grid (``python -m benchmarks.grid.run_grid``) and its
  report (``python -m benchmarks.grid.report``), against the papers' numbers;
* ``benchmarks.perf``: speed and memory (the scan, the losses, a training step, data
  preparation, serving);
* ``benchmarks.studies``: one-off studies (HM2Rec's ablations and start, the ML-1M tie order,
  learning curves);
* ``benchmarks.common``: what they share.  Results are written to ``benchmarks/results/``.
"""
