"""Training around RecBole's trainer.

* :mod:`~recbole_hyper.training.trainer`: :class:`PluginTrainer` (RecBole's
  trainer with learning-rate schedules, hooks, checkpoints that load on
  current torch, Riemannian optimisation, last states);
* :mod:`~recbole_hyper.training.optim`: RiemannianAdam beside the configured
  optimiser for manifold parameters;
* :mod:`~recbole_hyper.training.resume`: the last state written after every
  epoch, and resuming from it;
* :mod:`~recbole_hyper.training.distributed`: data-parallel training on CPUs
  (gloo) and GPUs (NCCL) with exact metrics;
* :mod:`~recbole_hyper.training.baselines`: the full-sequence loss for
  RecBole's causal models (SASRec, GRU4Rec);
* :mod:`~recbole_hyper.training.tune`: hyperparameter search with RecBole's
  ``HyperTuning``.

The submodules are imported where they are used; nothing is imported here.
"""
