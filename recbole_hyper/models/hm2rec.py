"""HM2Rec (Liu et al., AAAI 2026): hyperbolic-enhanced mixture-of-experts Mamba.

No code is public.  The paper's abstract names four components; everything
else is our documented reconstruction ([design], each behind a key):

1. **Hyperbolic graph convolution** over the user-item graph of the training
   split (no validation or test edges), following HGCF: the user and item
   nodes are points of the Lorentz model H^d_K (curvature -1/K, ``curvature``,
   optionally learned: ``learn_curvature``), stored as a geoopt
   ``ManifoldParameter`` and stepped by geoopt's ``RiemannianAdam`` (the
   plugin's trainer gives the manifold parameters to it and everything else
   to the configured optimiser; [design] no weight decay on the points;
   [design] ``graph_lr_scale``: the nodes learn at that multiple of
   ``learning_rate``, scheduled with the rest).
   They are mapped to the tangent space at the origin (log_o), propagated
   ``z^(l+1) = A_hat z^(l)`` (A_hat = D^-1/2 A D^-1/2) for ``gcn_layers``
   layers with a skip-sum, and mapped back (exp_o).  The geometry shapes
   what is learned through the optimiser and through the structural losses,
   which are written in the Lorentz distance ``K arcosh^2(-<x, y>_L / K)``:

   * ``graph_loss: margin`` (HGCF): ``mean max(0, d^2(u, i) - d^2(u, j) + margin)``
     over ``margin_edges`` sampled training edges (u, i), each with a
     uniformly drawn item j the user has not interacted with, weighted by
     ``graph_loss_weight``; ``none`` switches it off.
   * the VGAE's decoder (below).

   ``graph_parameters`` ([design]): ``manifold`` stores the points as above;
   ``tangent`` stores each node as its tangent vector at the origin (the
   point is exp_o of it), a plain parameter for the configured optimiser:
   the same points are reachable, the geometry still defines the losses,
   and a training step skips the whole-table log_o and Riemannian step and
   maps to the hyperboloid only the nodes the losses sample.

   ``use_hyperbolic: False`` is the same architecture with Euclidean points
   (a plain parameter, the configured optimiser, LightGCN propagation) and the
   squared Euclidean distance in the same losses.
2. **VGAE** on the tangent-space node embeddings: one GCN layer each for mu and
   log sigma, a reparameterised sample for its loss, and a decoder over
   ``vgae_edges`` sampled training edges against as many sampled non-edges:
   ``vgae_decoder: fermi_dirac`` (HGCN's link decoder,
   ``p = 1 / (exp((d^2 - r) / t) + 1)`` on the distance of the samples mapped
   into the geometry, ``fd_r``, ``fd_t``) or ``inner_product`` (Kipf &
   Welling).  Loss ``vgae_weight * (BCE + KL)``; the KL's scale is
   ``vgae_kl_scale``: ``node_mean`` (mean over nodes of the sum over
   dimensions) or ``kipf`` (that divided by the number of nodes, as the
   reference code).  ``vgae_fusion``: what the sequence model receives,
   ``mean`` (mu, in training as in evaluation), ``sample`` (the
   reparameterised sample in training, mu in evaluation) or ``residual``
   (the propagated graph embeddings plus mu).  [design] ``mean`` is the default:
   with ``sample`` the reparameterisation noise enters the item table in
   training only (evidence in ``docs/hm2rec_reconstruction.md``).
   ``use_vgae: False`` uses the graph embeddings directly.
3. **Fusion**: the item representation of the sequence model (input
   embeddings and the tied scoring table) is the ID embedding plus a learned
   linear projection of the item's graph (VGAE) embedding.  ``fuse_init``
   ([design]): ``normal`` draws the projection like every Linear weight,
   N(0, initializer_range); ``zero`` starts it at zero, so that the item
   table starts exactly at the ID embeddings (Mamba4Rec's) and the graph
   enters as training finds it useful.  ``use_graph: False`` removes
   components 1-3 (no graph, no VGAE, no projection): the item table is the
   ID embedding, as in Mamba4Rec.
4. **RoPE-Mamba** (``rope_mode``): ``bc`` rotates B_t and C_t by position
   with A tied within rotated pairs (exact relative positions, see
   :mod:`recbole_hyper.layers.rope`); ``input`` rotates the token
   representation before the Mamba block; ``none`` is plain Mamba.
5. **Mixture of experts** in place of the feed-forward block: the layer of
   HyMoERec with routed experts only (E = 4, top-2), balance term off by
   default (``lambda_lb``); ``use_moe: False`` keeps Mamba4Rec's FFN.
   [design] ``moe_shared_expert: True`` adds HyMoERec's dense shared expert
   (output = shared FFN + routed mixture, no warm-up ramp).

The rest follows Mamba4Rec (dropout then LayerNorm on the inputs, Mamba
layers, CE over all items).  L2 regularisation (1e-6 in the summary) is
RecBole's ``weight_decay``.  The summary's "n-hop" and "reconstruction
threshold b" are not described by any source and are not implemented.

The graph is propagated once per training step; in evaluation the item table
is computed once per evaluation and reused for every batch.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn

from recbole_hyper.config.params import HyperParameterError, Param, check_params
from recbole_hyper.data import training_edges
from recbole_hyper.layers.graph import (
    VGAE,
    GraphEncoder,
    fermi_dirac_logits,
    margin_ranking_loss,
    normalized_adjacency,
)
from recbole_hyper.layers.lorentz import Lorentz
from recbole_hyper.layers.mamba import Mamba
from recbole_hyper.layers.moe import MoEFeedForward, check_moe_settings
from recbole_hyper.layers.rope import RoPEMamba, rotate_pairs
from recbole_hyper.models.base import COMMON_PARAMS, MAMBA_PARAMS, MambaSequentialRecommender, trim_padding

__all__ = ["HM2Rec"]


class HM2Rec(MambaSequentialRecommender):
    """HM2Rec: hyperbolic graph convolution and a VGAE feeding a RoPE-Mamba with a mixture of experts.

    Paper: Liu, Qi, Mao, Liu, Fan, Ni, Zhang, Zhang, Tian, Beheshti, AAAI 2026.  No code
    is public and the abstract names only the four components; everything else is our
    reconstruction, each choice a [design] key (module docstring; the evidence behind
    the defaults is in ``docs/hm2rec_reconstruction.md``).

    Method (:meth:`forward`): (1) the user-item graph of the training split is propagated
    on the Lorentz model (HGCF), (2) a VGAE encodes the propagated nodes, (3) each item's
    table row is its ID embedding plus a learned projection of its graph embedding, (4) the
    sequence of table rows runs through RoPE-Mamba layers whose (5) feed-forward block is a
    routed mixture of experts; items are scored by dot product with the same table.  The
    loss adds ``graph`` (HGCF's margin loss and the VGAE's reconstruction + KL, weighted)
    and, with ``lambda_lb`` > 0, ``load_balance_<layer>``.

    With ``use_graph: False``, ``rope_mode: none`` and ``use_moe: False`` the model is
    Mamba4Rec (same parameters and names, same scores): the ladder from Mamba4Rec to HM2Rec
    adds one component at a time.

    Keys that matter (``properties/model/HM2Rec.yaml``): ``use_graph``, ``use_hyperbolic``, ``curvature``,
    ``gcn_layers`` (2), ``graph_loss``/``graph_loss_weight``/``margin``, ``use_vgae``,
    ``vgae_weight``, ``vgae_decoder``, ``vgae_fusion`` (mean), ``rope_mode`` (bc),
    ``use_moe``, ``n_experts`` (4), ``top_k`` (2), ``dropout_prob`` (0.3).
    """

    hyper_parameters = {
        **COMMON_PARAMS,
        **MAMBA_PARAMS,
        "use_graph": Param("bool", "the graph branch (graph convolution, VGAE, fusion into the item table)"),
        "fuse_init": Param("str", "init of the graph-to-item-table projection", choices=("normal", "zero")),
        "use_hyperbolic": Param("bool", "hyperbolic (HGCF) or Euclidean (LightGCN) graph convolution"),
        "graph_parameters": Param(
            "str", "hyperbolic nodes stored as points (Riemannian Adam) or tangent vectors at the origin",
            choices=("manifold", "tangent"),
        ),
        "curvature": Param("float", "K of the Lorentz model (curvature -1/K)", low=0, low_open=True),
        "learn_curvature": Param("bool", "learn K (as log K)"),
        "graph_loss": Param("str", "structural loss on the graph points", choices=("margin", "none")),
        "graph_loss_weight": Param("float", "weight of the structural loss", low=0),
        "margin": Param("float", "margin of HGCF's ranking loss", low=0),
        "margin_edges": Param("int", "(user, item, negative) triples per step", low=1),
        "max_tangent_norm": Param("float", "tangent norm clip before exp_o", low=0, low_open=True),
        "gcn_layers": Param("int", "graph convolution layers", low=0),
        "graph_init_std": Param("float", "std of the graph embeddings' normal init", low=0, low_open=True),
        "graph_lr_scale": Param("float", "learning rate of the graph nodes, as a multiple of learning_rate", low=0),
        "use_vgae": Param("bool", "variational graph auto-encoder on the graph embeddings"),
        "vgae_weight": Param("float", "weight of the VGAE loss", low=0),
        "vgae_edges": Param("int", "training edges (and as many non-edges) per step", low=1),
        "vgae_decoder": Param("str", "VGAE link decoder", choices=("fermi_dirac", "inner_product")),
        "fd_r": Param("float", "Fermi-Dirac radius r"),
        "fd_t": Param("float", "Fermi-Dirac temperature t", low=0, low_open=True),
        "vgae_kl_scale": Param("str", "KL scale", choices=("node_mean", "kipf")),
        "vgae_fusion": Param(
            "str", "graph output fed to the sequence model", choices=("mean", "sample", "residual")
        ),
        "rope_mode": Param("str", "where RoPE enters Mamba", choices=("bc", "input", "none")),
        "rope_base": Param("float", "RoPE frequency base", low=1),
        "use_moe": Param("bool", "mixture-of-experts feed-forward block"),
        "n_experts": Param("int", "routed experts", low=1),
        "top_k": Param("int", "experts per token", low=1),
        "lambda_lb": Param("float", "weight of the load-balance term", low=0),
        "moe_router": Param("str", "router network", choices=("mlp", "linear")),
        "moe_shared_expert": Param("bool", "a dense shared expert beside the routed ones"),
    }

    @classmethod
    def check_config(cls, config) -> None:
        check_params(config, cls.hyper_parameters, cls.__name__)
        problems = check_moe_settings(config["n_experts"], config["top_k"], 0, config["lambda_lb"])
        if config["rope_mode"] == "bc" and config["d_state"] % 2:
            problems.append(f"d_state = {config['d_state']}: rope_mode 'bc' needs an even d_state")
        if config["rope_mode"] == "input" and config["hidden_size"] % 2:
            problems.append(f"hidden_size = {config['hidden_size']}: rope_mode 'input' needs an even hidden_size")
        if problems:
            raise HyperParameterError(f"Invalid hyperparameters for {cls.__name__}:\n  " + "\n  ".join(problems))

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.hidden_size
        self.dropout_prob = config["dropout_prob"]
        self.rope_mode = config["rope_mode"]
        self.rope_base = float(config["rope_base"])
        self.use_vgae = config["use_vgae"]
        self.vgae_weight = float(config["vgae_weight"])
        self.vgae_edges = int(config["vgae_edges"])
        self.vgae_decoder = config["vgae_decoder"]
        self.fd_r, self.fd_t = float(config["fd_r"]), float(config["fd_t"])
        self.vgae_kl_scale = config["vgae_kl_scale"]
        self.vgae_fusion = config["vgae_fusion"]
        self.graph_loss = config["graph_loss"]
        self.graph_loss_weight = float(config["graph_loss_weight"])
        self.margin = float(config["margin"])
        self.margin_edges = int(config["margin_edges"])
        self.n_users = dataset.num(self.USER_ID)
        self.use_graph = config["use_graph"]
        self.fuse_init = config["fuse_init"]
        self.graph_lr_scale = float(config["graph_lr_scale"])
        if self.use_graph:
            self.build_graph_branch(config, dataset)
        else:
            self.lorentz = self.graph = self.vgae = self.fuse = None

        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(d, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.mamba_layers = self.build_layers(config)
        self._table = None
        self.init_weights(config)

    def build_graph_branch(self, config, dataset) -> None:
        """Components 1-3: the training graph, its encoder (Lorentz or Euclidean), the VGAE and
        the projection of graph embeddings into the item table."""
        d = self.hidden_size

        # The training split's graph, from the dataset (rebuilt, not checkpointed).
        edges = training_edges(dataset)
        adjacency = normalized_adjacency(edges, self.n_users, self.n_items)
        # Kept as the CSR components (dense tensors: they move with the model,
        # deep-copy, and stay out of checkpoints); see :meth:`adjacency`.
        self.register_buffer("adj_crow", adjacency.crow_indices(), persistent=False)
        self.register_buffer("adj_col", adjacency.col_indices(), persistent=False)
        self.register_buffer("adj_values", adjacency.values(), persistent=False)
        self.register_buffer("edges", torch.as_tensor(edges, dtype=torch.long), persistent=False)
        keys = np.sort(edges[:, 0].astype(np.int64) * self.n_items + edges[:, 1])
        self.register_buffer("edge_keys", torch.as_tensor(keys), persistent=False)

        self.lorentz = (
            Lorentz(
                config["curvature"],
                learnable=config["learn_curvature"],
                max_tangent_norm=config["max_tangent_norm"],
            )
            if config["use_hyperbolic"]
            else None
        )
        self.graph = GraphEncoder(
            self.n_users + self.n_items, d, config["gcn_layers"], float(config["graph_init_std"]), self.lorentz,
            tangent_parameters=config["graph_parameters"] == "tangent",
        )
        self.vgae = VGAE(d, d) if self.use_vgae else None
        self.fuse = nn.Linear(d, d, bias=False)

    def init_extra(self) -> None:
        """``fuse_init: zero``: the item table starts at the ID embeddings."""
        if self.fuse is not None and self.fuse_init == "zero":
            nn.init.zeros_(self.fuse.weight)

    def lr_scales(self) -> dict:
        """``graph_lr_scale``: the graph nodes' learning rate relative to the others' (optimiser hook)."""
        return {} if self.graph is None else {self.graph.weight: self.graph_lr_scale}

    def build_mixer(self, config, i):
        """RoPE-Mamba (``rope_mode: bc``) or Mamba."""
        common = self.mamba_kwargs(config)
        if self.rope_mode == "bc":
            return RoPEMamba(rope_base=self.rope_base, **common)
        return Mamba(**common)

    def build_ffn(self, config, i):
        """The routed mixture of experts (``use_moe``) or Mamba4Rec's FFN."""
        if not config["use_moe"]:
            return super().build_ffn(config, i)
        d = self.hidden_size
        return MoEFeedForward(
            d, 4 * d, self.dropout_prob,
            n_experts=config["n_experts"],
            top_k=config["top_k"],
            shared_expert=config["moe_shared_expert"],
            fusion="sum",
            lambda_lb=config["lambda_lb"],
            router=config["moe_router"],
            eps=self.layer_norm_eps,
        )

    # ------------------------------------------------------------- the graph
    def adjacency(self) -> torch.Tensor:
        """The normalized adjacency as a sparse CSR tensor (a view of the buffers)."""
        n = self.n_users + self.n_items
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                self.adj_crow, self.adj_col, self.adj_values, (n, n), check_invariants=False
            )

    def graph_item_embeddings(self) -> torch.Tensor:
        """Graph (or VGAE) embeddings of the items, (n_items, d); sets the structural losses in training."""
        adjacency = self.adjacency()
        points, tangent = self.graph(adjacency)
        losses = []
        if self.training and self.graph_loss == "margin" and self.graph_loss_weight > 0:
            losses.append(self.graph_loss_weight * self.margin_loss(points, *self.sample_triples(self.margin_edges)))
        if self.vgae is None:
            out = tangent[self.n_users :]
        else:
            mu, log_sigma = self.vgae.encode(adjacency, tangent)
            z = VGAE.sample(mu, log_sigma, self.training)
            if self.training and self.vgae_weight > 0:
                pos, neg = self.sample_edges(self.vgae_edges)
                bce = VGAE.reconstruction(self.link_logits(z, pos), self.link_logits(z, neg))
                losses.append(self.vgae_weight * (bce + VGAE.kl(mu, log_sigma, self.vgae_kl_scale)))
            if self.vgae_fusion == "residual":
                out = (tangent + mu)[self.n_users :]
            else:
                out = (z if self.vgae_fusion == "sample" else mu)[self.n_users :]
        if losses:
            self.add_loss("graph", sum(losses))
        return out

    def node_sqdist(self, points: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Squared distance in the graph's geometry between user and item nodes (matching rows)."""
        return self.graph.sqdist(points[users], points[self.n_users + items])

    def margin_loss(self, points, users, pos_items, neg_items) -> torch.Tensor:
        """HGCF's margin ranking loss on node points (nodes, d or d+1)."""
        return margin_ranking_loss(
            self.node_sqdist(points, users, pos_items), self.node_sqdist(points, users, neg_items), self.margin
        )

    def link_logits(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """The VGAE decoder's logits for (user, item) pairs of latent codes z (nodes, d)."""
        users, items = pairs[:, 0], pairs[:, 1]
        if self.vgae_decoder == "inner_product":
            return (z[users] * z[self.n_users + items]).sum(-1)
        points = self.graph.to_points(torch.cat([z[users], z[self.n_users + items]]))
        n = len(users)
        return fermi_dirac_logits(self.graph.sqdist(points[:n], points[n:]), self.fd_r, self.fd_t)

    def is_training_edge(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair is an edge of the training graph.

        A binary search in the sorted edge keys, O(k log E); ``torch.isin``
        sorts all E keys on every call, which dominated HM2Rec's training step.
        """
        keys = users * self.n_items + items
        at = torch.searchsorted(self.edge_keys, keys).clamp_(max=len(self.edge_keys) - 1)
        return self.edge_keys[at] == keys

    def sample_triples(self, k: int):
        """k training edges (user, item) and, per edge, an item the user has not interacted with."""
        device = self.edges.device
        pos = self.edges[torch.randint(len(self.edges), (k,), device=device)]
        users = pos[:, 0]
        neg = torch.randint(1, self.n_items, (k,), device=device)
        for _ in range(100):  # rejection; a user's items are a small part of the catalog
            clash = self.is_training_edge(users, neg)
            if not clash.any():
                break
            neg[clash] = torch.randint(1, self.n_items, (int(clash.sum()),), device=device)
        return users, pos[:, 1], neg

    def sample_edges(self, k: int):
        """k training edges and k (user, item) pairs that are not training edges."""
        device = self.edges.device
        pos = self.edges[torch.randint(len(self.edges), (k,), device=device)]
        neg = torch.empty(0, 2, dtype=torch.long, device=device)
        while len(neg) < k:
            cand = torch.stack(
                [
                    torch.randint(1, self.n_users, (2 * k,), device=device),
                    torch.randint(1, self.n_items, (2 * k,), device=device),
                ],
                dim=1,
            )
            is_edge = self.is_training_edge(cand[:, 0], cand[:, 1])
            neg = torch.cat([neg, cand[~is_edge]])
        return pos, neg[:k]

    def item_table(self) -> torch.Tensor:
        """ID embedding + projected graph embedding: the items' input and scoring table.

        Computed once per training step and once per evaluation.
        """
        if not self.use_graph:
            return self.item_embedding.weight
        if self._table is None:
            self._table = self.item_embedding.weight + self.fuse(self.graph_item_embeddings())
        return self._table

    def train(self, mode: bool = True):
        self._table = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._table = None
        return super()._load_from_state_dict(*args, **kwargs)

    def calculate_loss(self, interaction):
        self._table = None
        try:
            return super().calculate_loss(interaction)
        finally:
            self._table = None  # do not keep this step's autograd graph alive

    # ---------------------------------------------------------- the sequence
    def forward(self, item_seq, item_seq_len, target_mask=None):
        """The sequence representation after each sequence's last item, (batch, d), or at the
        positions ``target_mask`` marks; scored against :meth:`item_table`."""
        item_seq = trim_padding(item_seq, item_seq_len)
        self.item_table()  # 1.-3. graph convolution on H^d_K, VGAE, fusion (once per step, reused)
        x = self.embed(item_seq)  # table rows (RoPE here with rope_mode 'input'), dropout, LayerNorm
        h = self.run_layers(x, item_seq > 0, self.last_index(item_seq_len, target_mask))  # 4. RoPE-Mamba, 5. MoE
        return self.read_at(h, target_mask)

    def embed(self, item_seq, positions=None):
        x = self.item_table()[item_seq]
        if self.rope_mode == "input":
            if positions is None:
                positions = torch.arange(item_seq.shape[1], device=item_seq.device).unsqueeze(0)
            x = rotate_pairs(x, positions, self.rope_base)
        return self.LayerNorm(self.dropout(x))
