"""User-item graph encoders: LightGCN/HGCF propagation and a variational graph auto-encoder.

* :func:`normalized_adjacency` builds ``D^-1/2 A D^-1/2`` of the bipartite
  graph (users first, then items) once, with scipy, as a torch sparse CSR
  tensor; :func:`propagate` multiplies by it (and uses its symmetry for the
  gradient).
* :class:`GraphEncoder`: the node table and ``z^(l+1) = A_hat z^(l)`` for L
  layers with the skip-sum ``z^(0) + ... + z^(L)`` (LightGCN: no feature
  transform, no non-linearity).  With a
  :class:`~recbole_hyper.layers.lorentz.Lorentz` model it is HGCF's
  hyperbolic version: the nodes are points of the hyperboloid (geoopt
  manifold parameters, for a Riemannian optimiser), propagated in the tangent
  space at the origin (log_o, propagate, exp_o); its ``sqdist`` is the
  geometry's squared distance.
* Structural losses in that distance: HGCF's :func:`margin_ranking_loss` and
  HGCN's Fermi-Dirac decoder (:func:`fermi_dirac_logits`).
* :class:`VGAE` (Kipf & Welling, 2016) on node features X: one GCN layer each
  for the mean and the log standard deviation, a reparameterised sample in
  training and the mean in evaluation, and the loss BCE(observed training
  edges vs. as many sampled non-edges) + KL, for any decoder's logits.  The
  N x N reconstruction is never built: only the sampled pairs are decoded.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import geoopt
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "normalized_adjacency",
    "propagate",
    "GraphEncoder",
    "margin_ranking_loss",
    "fermi_dirac_logits",
    "VGAE",
]


def normalized_adjacency(edges: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the symmetric bipartite graph, (n_users + n_items)^2, sparse CSR."""
    n = n_users + n_items
    u, i = edges[:, 0], edges[:, 1] + n_users
    data = np.ones(2 * len(edges), dtype=np.float64)
    A = sp.coo_matrix((data, (np.r_[u, i], np.r_[i, u])), shape=(n, n)).tocsr()
    degree = np.asarray(A.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    nz = degree > 0
    inv_sqrt[nz] = degree[nz] ** -0.5
    D = sp.diags(inv_sqrt)
    norm = (D @ A @ D).tocoo()
    index = torch.as_tensor(np.vstack([norm.row, norm.col]), dtype=torch.long)
    values = torch.as_tensor(norm.data, dtype=torch.float32)
    coo = torch.sparse_coo_tensor(index, values, (n, n), check_invariants=True).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a constant symmetric sparse A; the gradient A^T g is A g.

    torch's generic sparse backward transposes A on every call; with CSR and
    symmetry a training step's propagation is several times faster.
    """

    @staticmethod
    def forward(ctx, adjacency, x):
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adjacency @ grad


def propagate(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A_hat x for the symmetric normalized adjacency.

    In x's dtype, at least float32: sparse products have no bfloat16 kernel
    on the CPU, so under autocast (enable_amp) the propagation stays float32.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        return _SymmetricSpMM.apply(adjacency.to(dtype), x.to(dtype))


class _PointsOfRows:
    """exp_o of the rows of a tangent table, mapped only for the rows indexed."""

    def __init__(self, tangent: torch.Tensor, to_points):
        self.tangent, self._to_points = tangent, to_points

    def __getitem__(self, index) -> torch.Tensor:
        return self._to_points(self.tangent[index])


class GraphEncoder(nn.Module):
    """Node embeddings and their propagation, Euclidean (LightGCN) or hyperbolic (HGCF).

    Euclidean: the node table is a plain ``(nodes, d)`` parameter.
    Hyperbolic: the nodes are points of the Lorentz model, a
    ``geoopt.ManifoldParameter`` of shape ``(nodes, d + 1)`` stepped by a
    Riemannian optimiser; the propagation runs in the tangent space at the
    origin: ``z^(0) = log_o(x)``, ``z^(l+1) = A_hat z^(l)``, skip-sum, and the
    sum is mapped back with ``exp_o``.  :meth:`sqdist` is the geometry's
    squared distance (Euclidean, or the squared Lorentz geodesic distance
    ``K arcosh^2(-<x, y>_L / K)``), the one every structural loss uses.

    ``tangent_parameters=True`` (hyperbolic only) stores each node as its
    tangent vector at the origin instead, a plain ``(nodes, d)`` parameter
    for the configured optimiser (the point is exp_o of it): the same points
    are reachable, no whole-table log_o and no Riemannian step, and the
    forward pass maps to the hyperboloid only the rows a loss reads (its
    ``points`` are indexed lazily).
    """

    def __init__(
        self, n_nodes: int, dim: int, n_layers: int = 2, init_std: float = 0.1, lorentz=None,
        tangent_parameters: bool = False,
    ):
        super().__init__()
        self.n_layers = n_layers
        self._lorentz = [lorentz]  # owned by the model, not registered twice
        self.tangent_parameters = bool(tangent_parameters) and lorentz is not None
        tangent = torch.randn(n_nodes, dim) * init_std
        if lorentz is None or self.tangent_parameters:
            self.weight = nn.Parameter(tangent)
        else:
            self.weight = geoopt.ManifoldParameter(lorentz.expmap0(tangent).detach(), manifold=lorentz.manifold)

    @property
    def lorentz(self):
        return self._lorentz[0]

    @property
    def hyperbolic(self) -> bool:
        return self.lorentz is not None

    def node_tangent(self) -> torch.Tensor:
        """The nodes as vectors of R^d: the parameters, or log_o of the points."""
        if not self.hyperbolic or self.tangent_parameters:
            return self.weight
        # Re-projected first: with a learned K the stored points sit on the
        # hyperboloid of the K they were last stepped with.
        points = self.lorentz.manifold.projx(self.weight)
        return self.lorentz.logmap0(points)[..., 1:]

    def to_points(self, tangent: torch.Tensor) -> torch.Tensor:
        """Vectors of R^d as points of the geometry (exp_o for the Lorentz model)."""
        return tangent if not self.hyperbolic else self.lorentz.expmap0(tangent)

    def forward(self, adjacency: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(node points, their tangent vectors at the origin); Euclidean: both the same.

        With ``tangent_parameters`` the points are mapped row by row when indexed.
        """
        z = self.node_tangent()
        total = z
        for _ in range(self.n_layers):
            z = propagate(adjacency, z)
            total = total + z
        if not self.hyperbolic:
            return total, total
        tangent = self.lorentz.clip_tangent(total)
        if self.tangent_parameters:
            return _PointsOfRows(tangent, self.lorentz.expmap0), tangent
        return self.lorentz.expmap0(tangent), tangent

    def sqdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Squared distance between matching rows of points x and y."""
        if not self.hyperbolic:
            return (x - y).pow(2).sum(-1)
        return self.lorentz.dist_from_neg_inner(-self.lorentz.inner(x, y).squeeze(-1)).pow(2)


def margin_ranking_loss(sq_pos: torch.Tensor, sq_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """HGCF's loss: mean of max(0, d^2(u, i) - d^2(u, j) + margin) over (user, item, negative)."""
    return F.relu(sq_pos - sq_neg + margin).mean()


def fermi_dirac_logits(sqdist: torch.Tensor, r: float, t: float) -> torch.Tensor:
    """Logits of HGCN's Fermi-Dirac decoder p = 1 / (exp((d^2 - r) / t) + 1)."""
    return (r - sqdist) / t


class VGAE(nn.Module):
    """Variational graph auto-encoder on node features (nodes, d)."""

    def __init__(self, d_in: int, d_latent: int):
        super().__init__()
        self.mu = nn.Linear(d_in, d_latent, bias=False)
        self.log_sigma = nn.Linear(d_in, d_latent, bias=False)

    def encode(self, adjacency: torch.Tensor, x: torch.Tensor):
        """(mu, log_sigma) of every node: one GCN layer each, A_hat X W.

        Computed as (A_hat X) W: one sparse product of the d_in-wide input for both
        heads, where A_hat (X [W_mu, W_sigma]) would take one of twice the latent width.
        """
        ax = propagate(adjacency, x)
        return self.mu(ax), self.log_sigma(ax).clamp(-10.0, 10.0)

    @staticmethod
    def sample(mu: torch.Tensor, log_sigma: torch.Tensor, training: bool) -> torch.Tensor:
        if not training:
            return mu
        return mu + torch.randn_like(mu) * log_sigma.exp()

    @staticmethod
    def kl(mu: torch.Tensor, log_sigma: torch.Tensor, scale: str = "node_mean") -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)), summed over dimensions.

        ``scale``: ``node_mean`` averages over the nodes; ``kipf`` also divides
        by the number of nodes, as Kipf & Welling's reference code does
        (``0.5 / N * mean_nodes(sum_dims(...))``).
        """
        per_node = -0.5 * torch.sum(1 + 2 * log_sigma - mu**2 - torch.exp(2 * log_sigma), dim=-1)
        value = per_node.mean()
        return value / mu.shape[0] if scale == "kipf" else value

    @staticmethod
    def reconstruction(pos_logit: torch.Tensor, neg_logit: torch.Tensor) -> torch.Tensor:
        """BCE of the decoder's logits on sampled edges (label 1) and non-edges (label 0)."""
        logits = torch.cat([pos_logit, neg_logit])
        labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)])
        return F.binary_cross_entropy_with_logits(logits, labels)
