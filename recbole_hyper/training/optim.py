"""Optimisers for models with parameters on a manifold.

A model with ``geoopt.ManifoldParameter`` s (HM2Rec's hyperbolic node table)
needs a Riemannian optimiser for them: a Euclidean step would leave the
manifold.  :func:`build_optimizer` gives those parameters to geoopt's
``RiemannianAdam`` and the rest to the configured (RecBole) optimiser, and
:class:`JointOptimizer` steps both as one, so RecBole's trainer (``zero_grad``,
``step``, ``param_groups`` for the learning-rate schedule, ``state_dict`` in
checkpoints) needs no change.  Models without manifold parameters get the
configured optimiser alone.
"""

from __future__ import annotations

from typing import Callable, Iterable, List

import geoopt
import torch

__all__ = ["JointOptimizer", "RiemannianAdam", "build_optimizer", "manifold_parameters"]


def manifold_parameters(params: Iterable[torch.nn.Parameter]):
    """(manifold parameters, the others) among the trainable ``params``."""
    on, off = [], []
    for p in params:
        if p.requires_grad:
            (on if isinstance(p, geoopt.ManifoldParameter) else off).append(p)
    return on, off


class _Handle:
    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


class JointOptimizer:
    """Several optimisers stepped together (each over its own parameters)."""

    def __init__(self, optimizers: List[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        self._pre_hooks: list = []

    @property
    def param_groups(self) -> list:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def register_step_pre_hook(self, hook: Callable) -> _Handle:
        """``hook(optimizer, args, kwargs)`` before every step (as torch's optimisers)."""
        self._pre_hooks.append(hook)
        return _Handle(self._pre_hooks, hook)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        for hook in list(self._pre_hooks):
            hook(self, (), {})
        loss = closure() if closure is not None else None
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        states = state.get("optimizers") if isinstance(state, dict) else None
        if states is None or len(states) != len(self.optimizers):
            raise ValueError("optimizer state does not match: it was saved for a different set of optimizers")
        for opt, s in zip(self.optimizers, states):
            opt.load_state_dict(s)


class RiemannianAdam(geoopt.optim.RiemannianAdam):
    """geoopt's ``RiemannianAdam`` whose state survives ``state_dict``/``load_state_dict`` exactly.

    geoopt keeps each parameter's ``step`` as a Python int; torch's
    ``Optimizer.load_state_dict`` turns it into a float32 tensor, and the bias
    corrections ``1 - beta ** step`` computed from it differ in the last bits,
    so a resumed run would drift from the uninterrupted one (~1e-5 after an
    epoch).  Loading puts the saved Python numbers back.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        params = [p for group in self.param_groups for p in group["params"]]
        for index, values in saved.items():
            current = self.state.get(params[index])
            if current is None:
                continue
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    current[key] = value


@torch.no_grad()
def _project_points(optimizer, args, kwargs) -> None:
    """Put the points back onto their manifold before a Riemannian step.

    With a learned curvature the points sit on the hyperboloid of the K they
    were last stepped with; a retraction from off the manifold can leave it
    for good (inf/NaN).  A no-op up to rounding for a fixed K.  The moments
    are left alone: projecting them adds a component along x that Adam's
    small second moments of rarely-updated rows blow up.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            if isinstance(p, geoopt.ManifoldParameter):
                p.copy_(p.manifold.projx(p))


def _lr_scales(model: torch.nn.Module) -> dict:
    """``{id(parameter): scale}`` from the model's ``lr_scales()`` hook (scales other than 1)."""
    hook = getattr(model, "lr_scales", None)
    scales = hook() if callable(hook) else {}
    return {id(p): float(s) for p, s in scales.items() if float(s) != 1.0}


def _groups(params: list, scales: dict, learning_rate: float) -> list:
    """``params`` as they are when none is scaled, else param groups with their own ``lr``."""
    if not any(id(p) in scales for p in params):
        return params
    plain = [p for p in params if id(p) not in scales]
    groups = [{"params": plain}] if plain else []
    for scale in sorted({scales[id(p)] for p in params if id(p) in scales}):
        chosen = [p for p in params if scales.get(id(p)) == scale]
        groups.append({"params": chosen, "lr": learning_rate * scale})
    return groups


def build_optimizer(model: torch.nn.Module, build: Callable, learning_rate: float):
    """The optimiser for ``model``: ``build(params)`` alone, or joint with RiemannianAdam.

    ``build`` makes the configured optimiser for a list of parameters (or of
    param groups).  The manifold parameters get ``RiemannianAdam`` at the same
    learning rate (scheduled with the rest) and no weight decay: an L2 pull
    towards the coordinate origin is not a pull towards the hyperboloid's
    origin.  A model may name parameters that learn at a multiple of the
    learning rate (``lr_scales()``: ``{parameter: scale}``, e.g. HM2Rec's
    ``graph_lr_scale``); they get their own param group, whose ``lr`` any
    schedule then scales like the others'.
    """
    scales = _lr_scales(model)
    on, off = manifold_parameters(model.parameters())
    if not on:
        if not scales:
            return build(list(model.parameters()))  # exactly RecBole's optimiser
        return build(_groups(off, scales, learning_rate))
    riemannian = RiemannianAdam(_groups(on, scales, learning_rate), lr=learning_rate, weight_decay=0.0)
    riemannian.register_step_pre_hook(_project_points)
    return JointOptimizer([build(_groups(off, scales, learning_rate)), riemannian]) if off else riemannian
