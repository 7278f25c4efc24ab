"""HyMoERec (Li, Sun, Lim, AAAI-26 student abstract): Mamba4Rec with a hybrid mixture of experts.

Method:

1. Backbone [design, supported by the paper's baselines]: Mamba4Rec (item
   embedding, dropout, LayerNorm, Mamba layers), everything as in
   :class:`~recbole_hyper.models.mamba4rec.Mamba4Rec` except the
   position-wise feed-forward block.
2. Hybrid mixture of experts in place of that block
   (:class:`~recbole_hyper.layers.moe.MoEFeedForward`): a dense shared FFN
   ``y_dense = FFN(x)`` plus E routed experts with top-K softmax gates,
   ``y_moe = sum_{i in TopK} g_i f_i(x)``.
3. Adaptive expert fusion: ``y = y_dense + alpha * y_moe``,
   ``alpha = sigmoid(alpha_param) * min(1, t / T_warmup)``, t the number of
   optimizer steps so far; [design] one learnable ``alpha_param`` per layer,
   initialised to 0; the step counter is a buffer (checkpointed, frozen in eval).
4. Loss: ``CE + lambda_lb * sum_e gbar_e log gbar_e`` with gbar_e the mean
   full-softmax router probability of expert e over non-padding tokens
   ([design]: full softmax, so that every expert receives gradient).

Paper settings (the defaults): E = 4, K = 2, T_warmup = 500,
lambda_lb = 0.02.  [design] switches: ``moe_router`` (mlp: Linear(d, d),
ReLU, Linear(d, E); or linear), ``moe_shared_expert``, ``moe_fusion``
(adaptive or sum).  The trainer logs each layer's expert load (fraction of
routed tokens per expert) after every epoch.
"""

from __future__ import annotations

from typing import List

from recbole_hyper.config.params import HyperParameterError, Param, check_params
from recbole_hyper.layers.moe import MoEFeedForward, check_moe_settings
from recbole_hyper.models.mamba4rec import Mamba4Rec

__all__ = ["HyMoERec", "MOE_PARAMS"]

MOE_PARAMS = {
    "n_experts": Param("int", "number of routed experts E", low=1),
    "top_k": Param("int", "experts per token K", low=1),
    "moe_warmup_steps": Param("float", "steps T_warmup of the fusion ramp", low=0),
    "lambda_lb": Param("float", "weight of the load-balance term", low=0),
    "moe_router": Param("str", "router network", choices=("mlp", "linear")),
    "moe_shared_expert": Param("bool", "add a dense shared expert"),
    "moe_fusion": Param("str", "combination of dense and routed outputs", choices=("adaptive", "sum")),
}


class HyMoERec(Mamba4Rec):
    """HyMoERec: Mamba4Rec with a hybrid mixture of experts in place of the feed-forward block.

    Paper: Li, Sun, Lim, AAAI-26 student abstract (arXiv 2511.06388).  No code is public;
    the abstract gives the hybrid MoE (shared dense FFN + top-K routed experts),
    adaptive fusion with a warm-up ramp and the load-balance term.  Reconstructed
    ([design], each a key): the backbone is Mamba4Rec, the router's shape
    (``moe_router``), one learnable fusion parameter per layer, a full-softmax
    balance term (module docstring).

    Method (:meth:`forward`, as Mamba4Rec's): embeddings, Mamba layers whose
    feed-forward block is :class:`~recbole_hyper.layers.moe.MoEFeedForward`
    (``y = FFN(x) + alpha * sum_{TopK} g_i f_i(x)``), dot-product scores; the
    training loss adds each layer's balance term (``load_balance_<layer>``).

    Keys that matter (``properties/model/HyMoERec.yaml``): Mamba4Rec's, and
    ``n_experts`` (4), ``top_k`` (2), ``moe_warmup_steps`` (500), ``lambda_lb``
    (0.02), ``moe_router`` (mlp), ``moe_shared_expert`` (True), ``moe_fusion`` (adaptive).
    """

    hyper_parameters = {**Mamba4Rec.hyper_parameters, **MOE_PARAMS}

    @classmethod
    def check_config(cls, config) -> None:
        check_params(config, cls.hyper_parameters, cls.__name__)
        problems = check_moe_settings(
            config["n_experts"], config["top_k"], config["moe_warmup_steps"], config["lambda_lb"]
        )
        if problems:
            raise HyperParameterError(
                f"Invalid hyperparameters for {cls.__name__}:\n  " + "\n  ".join(problems)
            )

    ffn_first = True

    def build_ffn(self, config, i):
        """The hybrid mixture of experts in place of the FFN."""
        return MoEFeedForward(
            d_model=self.hidden_size,
            inner_size=self.hidden_size * 4,
            dropout=self.dropout_prob,
            n_experts=config["n_experts"],
            top_k=config["top_k"],
            shared_expert=config["moe_shared_expert"],
            fusion=config["moe_fusion"],
            warmup_steps=config["moe_warmup_steps"],
            lambda_lb=config["lambda_lb"],
            router=config["moe_router"],
            eps=self.layer_norm_eps,
        )

    def moe_layers(self) -> List[MoEFeedForward]:
        return [layer.ffn for layer in self.mamba_layers]

    def forward(self, item_seq, item_seq_len, target_mask=None):
        """Mamba4Rec's forward: embeddings, then Mamba layers whose feed-forward block is the
        hybrid mixture of experts (built by :meth:`build_ffn`; its balance terms join the loss)."""
        return super().forward(item_seq, item_seq_len, target_mask)
