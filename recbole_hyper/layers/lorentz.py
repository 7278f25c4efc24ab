"""Lorentz (hyperboloid) model operations on top of geoopt.

Points of ``H^d_K = {x in R^{d+1} : <x, x>_L = -K, x_0 > 0}`` with the
Minkowski product ``<x, y>_L = -x_0 y_0 + sum_i x_i y_i``; the origin is
``o = (sqrt K, 0, ..., 0)`` and the curvature is -1/K.  geoopt's ``Lorentz``
manifold uses the same convention (its ``k`` is our K), and its functions are
used wherever they compute what we need: ``expmap0``, ``logmap0``,
``project`` (re-projection onto the hyperboloid), ``inner``, ``dist`` and
``lorentz_to_poincare``.  Hand-written code covers only what geoopt has no
function for; each such place says why.

geoopt's functions are TorchScript.  TorchScript's executor runs a function's
first call as profiled and later calls through an optimised graph whose
backward formulas round differently, so results would depend on how often a
process has called them before (a run resumed from its last state, or one
that counted FLOPs first, drifted from the uninterrupted run at ~1e-5 after an
epoch).  Every call here runs with graph optimisation off
(``torch.jit.optimized_execution(False)``): the same ops as eager PyTorch,
the same result on every call.
"""

from __future__ import annotations

import functools
import inspect
import math

import geoopt
import torch
import torch.nn as nn
import torch.nn.functional as F
from geoopt.manifolds.base import Manifold
from geoopt.manifolds.lorentz import math as lmath

__all__ = ["Lorentz", "ARCOSH_EPS", "unoptimized"]

# Lower clamp of arcosh's argument (1 + eps); arcosh'(x) = 1 / sqrt(x^2 - 1).
ARCOSH_EPS = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-7, torch.float64: 1e-15}


def unoptimized(fn):
    """``fn`` with TorchScript graph optimisation off: the same rounding on every call."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with torch.jit.optimized_execution(False):
            return fn(*args, **kwargs)

    return call


class Lorentz(nn.Module):
    """Maps between R^d (tangent space at the origin) and the hyperboloid H^d_K.

    Args:
        curvature: K > 0 (the sectional curvature is -1/K).
        learnable: learn K (stored as log K, so it stays positive).
        max_tangent_norm: tangent vectors are shortened to this norm before
            ``expmap0``.  cosh/sinh grow like e^r: beyond r ~ 44 the squared
            coordinates overflow float32, and far earlier the hyperboloid
            constraint can no longer be represented.  Norms reached in
            practice are far below the default; the clip only keeps
            pathological inputs finite.
    """

    def __init__(self, curvature: float = 1.0, learnable: bool = False, max_tangent_norm: float = 15.0):
        super().__init__()
        if curvature <= 0:
            raise ValueError(f"curvature must be > 0, got {curvature}.")
        # Kept in float64 whatever the model dtype: K is used cast to the input dtype.
        log_k = torch.tensor(math.log(curvature), dtype=torch.float64)
        if learnable:
            self.log_k = nn.Parameter(log_k)
        else:
            self.register_buffer("log_k", log_k)
        self.max_tangent_norm = float(max_tangent_norm)

    @property
    def k(self) -> torch.Tensor:
        """K, as a scalar tensor."""
        return self.log_k.exp()

    @property
    def manifold(self) -> geoopt.Lorentz:
        """geoopt's Lorentz manifold with this model's K, for ``geoopt.ManifoldParameter``.

        geoopt's Riemannian optimisers step manifold parameters with its
        manifold's ``retr``/``proju``/``egrad2rgrad``; this view reads K from
        here, so a learned K is one number for the parameters and the maps.
        """
        view = self.__dict__.get("_manifold")
        if view is None:
            view = _LorentzView(self)
            self.__dict__["_manifold"] = view  # not a submodule: no cycle in modules()
        return view

    def _k(self, like: torch.Tensor) -> torch.Tensor:
        return self.k.to(like.dtype)

    def clip_tangent(self, v: torch.Tensor) -> torch.Tensor:
        """Scale v (..., d) down to norm <= max_tangent_norm * sqrt(K) (no-op below it).

        exp_o's coordinates grow like sqrt(K) cosh(|v| / sqrt(K)), so the
        bound is on |v| / sqrt(K): at K = 1 it is ``max_tangent_norm`` itself,
        and a small K (1e-3) cannot overflow either.
        """
        # min(1, c / |v|) written as c / max(|v|, c): no reciprocal of a tiny norm
        # is formed, so the backward pass stays finite for |v| -> 0 (a reciprocal's
        # gradient, -1/|v|^2, overflows to inf below |v| ~ 1e-19 in float32 and
        # turns into NaN even where the clamp passes no gradient).
        norm = v.norm(dim=-1, keepdim=True)
        bound = self.max_tangent_norm * self._k(v).sqrt()
        return v * (bound / torch.maximum(norm, bound))

    @unoptimized
    def expmap0(self, v: torch.Tensor) -> torch.Tensor:
        """exp_o((0, v)): R^d -> H^d_K, shape (..., d) -> (..., d + 1)."""
        u = F.pad(self.clip_tangent(v), (1, 0))
        return lmath.project(lmath.expmap0(u, k=self._k(u)), k=self._k(u))

    @unoptimized
    def logmap0(self, x: torch.Tensor) -> torch.Tensor:
        """log_o(x): H^d_K -> tangent space at o, (..., d + 1) with first coordinate 0."""
        return lmath.logmap0(x, k=self._k(x))

    @unoptimized
    def lift(self, h: torch.Tensor) -> torch.Tensor:
        """The hyperboloid point with spatial part h: (sqrt(K + |h|^2), h)."""
        return lmath.project(F.pad(h, (1, 0)), k=self._k(h))

    @unoptimized
    def inner(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """<x, y>_L for matching rows."""
        return lmath.inner(x, y)

    def neg_inner_all(self, u: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """-<u_b, p_v>_L for every row u_b (B, d+1) and every point p_v (V, d+1): (B, V).

        geoopt's ``inner`` pairs rows by broadcasting, which for all pairs
        would build a (B, V, d+1) tensor; the Minkowski product is a
        sign-flipped dot product, so all pairs are one matrix product.
        """
        flipped = torch.cat([u.narrow(-1, 0, 1), -u.narrow(-1, 1, u.shape[-1] - 1)], dim=-1)
        return flipped @ points.transpose(0, 1)

    def arcosh_argument(self, neg_inner: torch.Tensor, high: float = None) -> torch.Tensor:
        """-<x, y>_L / K clamped to [1 + eps, high] (eps by dtype)."""
        theta = neg_inner / self._k(neg_inner)
        return theta.clamp(min=1.0 + ARCOSH_EPS[theta.dtype], max=high)

    @unoptimized
    def dist_from_neg_inner(self, neg_inner: torch.Tensor, high: float = None) -> torch.Tensor:
        """Geodesic distance sqrt(K) arcosh(-<x, y>_L / K) from the Minkowski product."""
        theta = self.arcosh_argument(neg_inner, high)
        return self._k(theta).sqrt() * lmath.arcosh(theta)

    @unoptimized
    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Geodesic distance between matching rows (geoopt's ``dist``)."""
        return lmath.dist(x, y, k=self._k(x))

    @unoptimized
    def to_poincare(self, x: torch.Tensor) -> torch.Tensor:
        """Hyperboloid -> Poincare ball of radius sqrt(K)."""
        return lmath.lorentz_to_poincare(x, k=self._k(x))


class _LorentzView(geoopt.Lorentz):
    """geoopt's ``Lorentz`` whose K is read from a :class:`Lorentz` module.

    Its retraction first projects the step onto the tangent space at x.
    RiemannianAdam divides the (tangent) first moment by the square root of
    a per-coordinate second moment, which in the Lorentz model's ambient
    coordinates is no longer a tangent vector; geoopt's exp map of such a
    step can have a negative Minkowski norm and returns inf/NaN.  Projecting
    keeps the step's spatial direction and makes it tangent.
    """

    def __init__(self, owner: Lorentz):
        Manifold.__init__(self)  # geoopt's __init__ would store a K of its own
        self.__dict__["_owner"] = owner

    @property
    def k(self) -> torch.Tensor:
        return self.__dict__["_owner"].k

    def retr(self, x: torch.Tensor, u: torch.Tensor, *, dim=-1) -> torch.Tensor:
        return self.expmap(x, self.proju(x, u, dim=dim), dim=dim)


# geoopt's manifold methods (what RiemannianAdam and ``projx`` call) without
# TorchScript graph optimisation, like the module's maps (see the docstring).
for _name, _fn in list(vars(geoopt.Lorentz).items()) + [("retr", _LorentzView.retr)]:
    if inspect.isfunction(_fn) and not _name.startswith("_"):
        setattr(_LorentzView, _name, unoptimized(_fn))
del _name, _fn
