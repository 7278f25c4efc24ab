"""HMamba (Zhang et al., 2025): hyperbolic Mamba for sequential recommendation.

Lorentz model H^d_K with curvature -1/K (see :mod:`recbole_hyper.layers.lorentz`).
Method, in the form of the authors' released code:

1. Items are lifted onto the hyperboloid, ``x = exp_o([0; e])``; then
   dropout and a LayerNorm over the d + 1 coordinates (which leaves the
   manifold, as in the code) feed a Mamba block whose ``in_proj`` takes
   d + 1 inputs; Mamba4Rec's wrapper and feed-forward block follow, giving
   h in R^d at every position.
2. **Full**: h is re-projected onto the hyperboloid, ``u = (sqrt(K + |h|^2), h)``,
   and item v is scored by its distance to ``p_v = exp_o([0; E_v])``:

   * ``score: sqdist`` (released code): ``-2 - 2 min(d^2, 30)`` with
     ``d^2 = K arcosh^2(clamp(-<u, p_v>_L / K, 1 + eps, 10))``, a bounded
     squared-distance score;
   * ``score: dist`` (paper): ``-2 sqrt(K) arcosh(-<u, p_v>_L / K)``.

   A regulariser ``norm_reg_weight * mean ||x||_2`` over the lifted inputs is
   added to the loss (weight 1 in the code).
3. **Half**, in one of two forms (``half_form``):

   * ``code`` (default, the released code): the same encoder, then
     ``t = log_o(u)`` and dot-product scores ``t . E_v`` (the code's
     zero-padded item embeddings);
   * ``paper`` (the paper's Algorithm 1): LayerNorm of the Euclidean item
     embeddings (after dropout), a standard Mamba block with d inputs,
     Mamba4Rec's wrapper and feed-forward block, and dot-product scores
     ``h . E_v``: no map to or from the hyperboloid.

   The released code's log map caps the spatial norm at 10 in its
   denominator.  Ours does not: it is geoopt's log map, the exact inverse of
   exp_o (log_o(exp_o(v)) = v, tested); a cap would make it longer than
   the geodesic distance for points with spatial norm above 10 (distance
   arsinh(10) ~ 3.0 at K = 1).  Values stay finite through the
   ``max_tangent_norm`` clip before exp_o instead.
4. Curvature K = 1 by default (as in the code), optionally learned
   (``learn_curvature``).  ``curvature_aware_A`` applies the paper's
   curvature-aware discretisation ``A_bar = exp(delta A K(kappa))`` with
   ``K(kappa) = diag(sqrt|kappa|, 1, ..., 1)``, kappa = -1/K: the first state
   dimension's A is scaled by 1/sqrt(K) (the identity at K = 1).

Initialisation as in the code: Full draws the item table from xavier-uniform,
keeps PyTorch's default Linear weights and zeroes Linear biases; Half uses
Mamba4Rec's N(0, 0.02).  Defaults reproduce the released Full model
(dropout 0.1, top-k 10/20/40; see ``properties/model/HMamba.yaml``).

Reconstruction choices ([design], each a key): tangent vectors are clipped to
``max_tangent_norm`` before ``exp_o`` so that float32 stays finite for any
embedding norm; with several layers, the first (d + 1 -> d) layer has no
residual connection.  Full-ranking scores are one matrix product (the
Minkowski product) plus an elementwise arcosh.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from geoopt.manifolds.lorentz.math import arcosh

from recbole_hyper.config.params import Param
from recbole_hyper.layers.curvature import CurvatureAwareMamba
from recbole_hyper.layers.lorentz import Lorentz
from recbole_hyper.layers.mamba import Mamba
from recbole_hyper.models.base import COMMON_PARAMS, MAMBA_PARAMS, MambaSequentialRecommender, trim_padding

__all__ = ["HMamba"]

_SQDIST_MAX = 30.0
_SQDIST_THETA_MAX = 10.0


class HMamba(MambaSequentialRecommender):
    """HMamba: hyperbolic Mamba on the Lorentz model, in its Full and Half variants.

    Paper: Zhang, Wen, Yuan, Chen, Yang, Yiu, Yin, "HMamba: Hyperbolic Mamba for
    Sequential Recommendation", arXiv 2505.09205 (later ACM TOIS).  Code: public (a
    fork of Mamba4Rec's); the defaults follow it (Full, K = 1, squared-distance
    scores, norm regulariser).  The paper's forms are switches: ``score: dist``,
    ``half_form: paper``, ``curvature_aware_A``.  Reconstructed ([design]): the
    tangent-norm clip before exp_o, no residual around a first layer of width d + 1,
    the exact log map (module docstring).

    Method (:meth:`forward`): items lifted onto the hyperboloid by exp_o, dropout and
    LayerNorm over the d + 1 coordinates, Mamba layers (the first takes d + 1 inputs),
    then :meth:`readout`: Full re-projects the output onto the hyperboloid and scores
    items by Lorentz distance; Half maps it back by log_o and scores by dot product.
    Full's loss adds ``norm_reg`` (``norm_reg_weight`` * mean norm of the lifted inputs).

    Keys that matter (``properties/model/HMamba.yaml``): ``variant`` (full),
    ``half_form`` (code), ``score`` (sqdist), ``curvature`` (1.0), ``learn_curvature``,
    ``curvature_aware_A``, ``norm_reg_weight`` (1 for Full), ``max_tangent_norm`` (15),
    ``dropout_prob`` (0.1), ``topk`` (10/20/40, as the code).
    """

    hyper_parameters = {
        **COMMON_PARAMS,
        **MAMBA_PARAMS,
        "variant": Param("str", "Full (distance scores) or Half (dot product)", choices=("full", "half")),
        "half_form": Param("str", "Half: the released code's form or the paper's Algorithm 1", choices=("code", "paper")),
        "score": Param("str", "Full's score: code's squared distance or paper's distance", choices=("sqdist", "dist")),
        "curvature": Param("float", "K of the Lorentz model (curvature -1/K)", low=0, low_open=True),
        "learn_curvature": Param("bool", "learn K"),
        "curvature_aware_A": Param("bool", "scale A's first state dimension by 1/sqrt(K)"),
        "norm_reg_weight": Param("float", "weight of mean ||exp_o(e)||", low=0, optional=True),
        "max_tangent_norm": Param("float", "tangent norm clip before exp_o", low=0, low_open=True),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.variant = config["variant"]
        # Half in the paper's form: Euclidean embeddings, standard Mamba, dot product.
        self.euclidean = self.variant == "half" and config["half_form"] == "paper"
        self.score_form = config["score"]
        self.dropout_prob = config["dropout_prob"]
        reg = config["norm_reg_weight"]
        self.norm_reg_weight = float(reg) if reg is not None else (1.0 if self.variant == "full" else 0.0)
        d = self.hidden_size

        self.lorentz = Lorentz(
            config["curvature"], learnable=config["learn_curvature"], max_tangent_norm=config["max_tangent_norm"]
        )
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.d_in = d if self.euclidean else d + 1  # the first layer's input width
        self.LayerNorm = nn.LayerNorm(self.d_in, eps=self.layer_norm_eps)
        self.curvature_aware_A = bool(config["curvature_aware_A"])
        self.mamba_layers = self.build_layers(config)
        self.init_weights(config)

    # ---------------------------------------------------------------- layers
    def build_mixer(self, config, i):
        """Mamba (curvature-aware with ``curvature_aware_A``); the first takes the d + 1 Lorentz coordinates."""
        common = dict(self.mamba_kwargs(config), d_input=self.d_in if i == 0 else self.hidden_size)
        if self.curvature_aware_A:
            return CurvatureAwareMamba(lorentz=self.lorentz, **common)
        return Mamba(**common)

    def layer_residual(self, config, i):
        """No residual around a first layer whose input is d + 1 wide."""
        return config["num_layers"] > 1 and (i > 0 or self.euclidean)

    # ------------------------------------------------------------------ init
    @property
    def redraw_weights(self) -> bool:
        """Half uses Mamba4Rec's N(0, 0.02); Full keeps PyTorch's default Linear init (as the code)."""
        return self.variant == "half"

    def init_extra(self) -> None:
        """Full: the item table from xavier-uniform (as the code)."""
        if self.variant == "full":
            nn.init.xavier_uniform_(self.item_embedding.weight)

    # --------------------------------------------------------------- encoder
    def embed(self, item_seq, positions=None):
        if self.euclidean:
            return self.LayerNorm(self.dropout(self.item_embedding(item_seq)))
        x = self.lorentz.expmap0(self.item_embedding(item_seq))
        if self.training and self.norm_reg_weight > 0:
            self.add_loss("norm_reg", self.norm_reg_weight * x.norm(dim=-1).mean())
        return self.LayerNorm(self.dropout(x))

    def forward(self, item_seq, item_seq_len, target_mask=None):
        """The user representation: a point u on H^d_K (Full), log_o(u) or h (Half), after each
        sequence's last item, or at the positions ``target_mask`` marks."""
        item_seq = trim_padding(item_seq, item_seq_len)
        x = self.embed(item_seq)  # 1. exp_o([0; e]) onto H^d_K, dropout, LayerNorm over d + 1 coordinates
        h = self.run_layers(x, item_seq > 0, self.last_index(item_seq_len, target_mask))  # Mamba layers -> R^d
        return self.readout(self.read_at(h, target_mask))  # 2. Full: lift onto H^d_K; 3. Half: log_o

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Full: the user point u on H^d_K, (..., d+1); Half: log_o(u) (code) or h (paper), (..., d)."""
        if self.euclidean:
            return h
        u = self.lorentz.lift(h)
        if self.variant == "full":
            return u
        return self.lorentz.logmap0(u)[..., 1:]

    # --------------------------------------------------------------- scoring
    #: Full scores by distance.  Half's scores are dot products with the item table, but Half
    #: keeps the full-logit cross-entropy it has always been trained with (the blocked one
    #: gives the same loss up to float rounding, which would change its results in the last bits).
    dot_product_scores = False

    def item_points(self) -> torch.Tensor:
        """p_v = exp_o([0; E_v]) for every item, (n_items, d+1)."""
        return self.lorentz.expmap0(self.item_embedding.weight)

    def _score_from_neg_inner(self, m: torch.Tensor) -> torch.Tensor:
        if self.score_form == "sqdist":
            theta = self.lorentz.arcosh_argument(m, high=_SQDIST_THETA_MAX)
            sq = (self.lorentz.k.to(theta.dtype) * arcosh(theta) ** 2).clamp(max=_SQDIST_MAX)
            return -2.0 - 2.0 * sq
        return -2.0 * self.lorentz.dist_from_neg_inner(m)

    def score_all(self, seq_output):
        if self.variant == "half":
            return seq_output @ self.item_embedding.weight.transpose(0, 1)
        return self._score_from_neg_inner(self.lorentz.neg_inner_all(seq_output, self.item_points()))

    def score_candidates(self, seq_output, items):
        if self.variant == "half":
            return seq_output @ self.item_embedding(items).transpose(0, 1)
        points = self.lorentz.expmap0(self.item_embedding(items))
        return self._score_from_neg_inner(self.lorentz.neg_inner_all(seq_output, points))

    def score_items(self, seq_output, items):
        if self.variant == "half":
            return (seq_output * self.item_embedding(items)).sum(-1)
        p = self.lorentz.expmap0(self.item_embedding(items))
        return self._score_from_neg_inner(-self.lorentz.inner(seq_output, p))
