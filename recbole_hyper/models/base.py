"""What every recbole_hyper model shares: config checks, layers, losses, scoring, streaming.

:class:`MambaSequentialRecommender` is the base class of the four models; its
docstring is the contract a model fulfils to plug in.  Training pairs in both
training modes, the losses (full, blocked or sampled softmax, BPR), RecBole's
``predict`` and ``full_sort_predict``, named extra loss terms and the
recurrent (streaming) form live here once.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss

from recbole_hyper.config.params import TRAINER_PARAMS, Param, check_params
from recbole_hyper.data import TRAIN_MODES, target_field, training_edges, uniform_negatives
from recbole_hyper.layers.ffn import FeedForward
from recbole_hyper.layers.mamba import Mamba
from recbole_hyper.layers.mamba_layer import MambaLayer
from recbole_hyper.layers.moe import MoEFeedForward
from recbole_hyper.ops.cross_entropy import linear_cross_entropy
from recbole_hyper.ops.sampled_softmax import CandidateSampler, sampled_softmax_loss
from recbole_hyper.ops.scan import SCAN_BACKENDS
from recbole_hyper.training.distributed import global_mean_part

__all__ = ["MambaSequentialRecommender", "COMMON_PARAMS", "MAMBA_PARAMS", "trim_padding"]

COMMON_PARAMS: Dict[str, Param] = {
    "hidden_size": Param("int", "embedding and model width", low=1),
    "loss_type": Param("str", "training loss", choices=("CE", "BPR", "SampledSoftmax")),
    "sampled_softmax_negatives": Param(
        "int", "shared negatives per batch for loss_type SampledSoftmax", low=1, optional=True
    ),
    "sampled_softmax_sampler": Param(
        "str", "proposal of loss_type SampledSoftmax's negatives", choices=("uniform", "popularity"), optional=True
    ),
    "sampled_softmax_logq": Param("bool", "logQ correction of loss_type SampledSoftmax", optional=True),
    "MAX_ITEM_LIST_LENGTH": Param("int", "longest item sequence", low=1),
    "train_mode": Param("str", "training examples", choices=TRAIN_MODES, optional=True),
    "initializer_range": Param("float", "std of the N(0, std) init of Linear and Embedding weights", low=0, optional=True),
    "layer_norm_eps": Param("float", "LayerNorm epsilon", low=0, low_open=True, optional=True),
    **TRAINER_PARAMS,
}


MAMBA_PARAMS: Dict[str, Param] = {
    "num_layers": Param("int", "number of Mamba layers", low=1),
    "dropout_prob": Param("float", "dropout probability", low=0.0, high=1.0, high_open=True),
    "d_state": Param("int", "SSM state size N", low=1),
    "d_conv": Param("int", "causal convolution kernel size", low=1),
    "expand": Param("int", "inner width ED = expand * hidden_size", low=1),
    "scan_backend": Param("str", "selective-scan backend", choices=SCAN_BACKENDS),
    "mamba_native_init": Param(
        "bool", "keep mamba-ssm's own init inside Mamba blocks", optional=True
    ),
}


def trim_padding(item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Drop the columns after the longest sequence (right padding only).

    The models are causal, so those columns cannot change any output that is read.
    """
    longest = int(lengths.max()) if lengths.numel() else item_seq.shape[1]
    return item_seq[:, : max(1, longest)]


class MambaSequentialRecommender(SequentialRecommender):
    """Base class of the plugin's sequential recommenders: a stack of Mamba layers over item embeddings.

    **What a model provides** (checked where a mistake would otherwise go unnoticed):

    * ``hyper_parameters``: its keys as a dict of :class:`~recbole_hyper.config.params.Param`
      (checked before any data is loaded); :meth:`check_config` for checks across keys.
    * In ``__init__``, after ``super().__init__(config, dataset)``:

      - ``self.item_embedding``: ``nn.Embedding(n_items, d, padding_idx=0)``; the default
        scoring table and the dtype of streaming states;
      - ``self.mamba_layers``: an ``nn.ModuleList`` of
        :class:`~recbole_hyper.layers.mamba_layer.MambaLayer`, normally
        :meth:`build_layers` (``num_layers`` layers of :meth:`build_mixer` and
        :meth:`build_ffn`); each mixer has ``empty_state`` and ``step`` for streaming;
      - last, ``self.init_weights(config)``: RecBole's initialisation of every module built
        before it, then :meth:`init_extra`.

    * :meth:`embed` ``(item_seq, positions=None)``: the input representation, (batch, L, d_in);
      ``positions`` are the items' positions in their sequences (0..L-1 when None).
    * ``forward(item_seq, item_seq_len, target_mask=None)``: the method of the paper, written
      out: :meth:`embed`, :meth:`run_layers`, then :meth:`readout`; returns the representation
      after each sequence's last item, (batch, d_out), or, with ``target_mask`` (batch, L), at
      every marked position, (n, d_out) (full-sequence training).

    **Optional hooks**: :meth:`readout` (map the last layer's output to scoring space);
    :meth:`item_table` (the items' scoring table); :meth:`score_all`, :meth:`score_items`,
    :meth:`score_candidates` for scores other than dot products with :meth:`item_table`, which
    then also set ``dot_product_scores = False`` (a class that overrides :meth:`score_all` must
    say which it is: with dot-product scores the cross-entropy is computed in blocks of rows,
    never holding the (targets, items) logits, so a wrong claim would train on other scores);
    :meth:`build_mixer`, :meth:`build_ffn`, :meth:`layer_residual`, ``ffn_first``;
    ``redraw_weights`` and :meth:`init_extra`; :meth:`epoch_report`.

    **Extra loss terms**: call :meth:`add_loss` ``(name, value)`` in a training forward pass.
    Mixture-of-experts layers' balance terms are collected as ``load_balance_<layer>``.
    :meth:`calculate_loss` returns ``(main, *extra)``, RecBole's trainer adds them up, and the
    plugin's trainer logs each under its name (:attr:`loss_names`).

    **What a model gets**: training pairs in both training modes (:meth:`training_pairs`), the
    losses (``loss_type`` CE, BPR or SampledSoftmax), RecBole's ``predict`` and
    ``full_sort_predict``, and the recurrent form (:meth:`stream_start`, :meth:`stream_step`).
    """

    hyper_parameters: Dict[str, Param] = COMMON_PARAMS

    #: Scores are ``seq_output @ item_table().T``.  A class that overrides :meth:`score_all`
    #: must set this itself (see the class docstring).
    dot_product_scores: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "score_all" in vars(cls) and "dot_product_scores" not in vars(cls):
            raise TypeError(
                f"{cls.__name__} overrides score_all: set dot_product_scores = True if its scores are still "
                "seq_output @ item_table().T (the cross-entropy is then computed in blocks), False otherwise."
            )

    @classmethod
    def check_config(cls, config) -> None:
        """Raise a clear error for invalid hyperparameters (before training)."""
        check_params(config, cls.hyper_parameters, cls.__name__)

    def __init__(self, config, dataset):
        type(self).check_config(config)
        super().__init__(config, dataset)
        self.TARGET_SEQ = target_field(config)
        self.hidden_size = config["hidden_size"]
        self.loss_type = config["loss_type"]
        self.loss_fct = BPRLoss() if self.loss_type == "BPR" else nn.CrossEntropyLoss()
        if self.loss_type == "SampledSoftmax":
            self.sampled_softmax_negatives = int(config["sampled_softmax_negatives"] or 1024)
            self.sampled_softmax_logq = config["sampled_softmax_logq"] is not False
            counts = None
            if (config["sampled_softmax_sampler"] or "uniform") == "popularity":
                # Popularity: the number of training users of each item.
                items = training_edges(dataset)[:, 1]
                counts = torch.as_tensor(np.bincount(items, minlength=self.n_items))
            self.candidate_sampler = CandidateSampler(self.n_items, counts)
        # RecBole's keys and defaults (as SASRec's).
        std, eps = config["initializer_range"], config["layer_norm_eps"]
        self.initializer_range = 0.02 if std is None else float(std)
        self.layer_norm_eps = 1e-12 if eps is None else float(eps)
        self._extra_losses: Dict[str, torch.Tensor] = {}
        #: Names of the parts of the last :meth:`calculate_loss` tuple.
        self.loss_names = ("loss",)

    # ------------------------------------------------------------------ model
    def embed(self, item_seq: torch.Tensor, positions: torch.Tensor = None) -> torch.Tensor:
        """Input representation of the sequence, (batch, L, d_in).

        ``positions`` (batch, L) are the items' positions in their sequences
        (default 0..L-1), for models whose input depends on them.
        """
        raise NotImplementedError

    def run_layers(self, x: torch.Tensor, mask: torch.Tensor, output_at: Optional[torch.Tensor] = None):
        """``self.mamba_layers`` over x (batch, L, d_in): (batch, L, d) at every position.

        With ``output_at`` (batch,) time indices, only the output at
        ``output_at[b]`` of each row, (batch, d): the last layer then skips the
        work that no output depends on.  ``mask`` (batch, L) marks real items.
        """
        last = len(self.mamba_layers) - 1
        for i, layer in enumerate(self.mamba_layers):
            x = layer(x, mask, output_at if i == last else None)
        return x

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Map the last layer's outputs (..., d) to what the scoring functions take (identity here)."""
        return h

    @staticmethod
    def read_at(h: torch.Tensor, target_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The outputs :meth:`run_layers` gave that are read: all of them (already at the last
        item), or those at the positions ``target_mask`` marks."""
        return h if target_mask is None else h[target_mask]

    @staticmethod
    def last_index(item_seq_len: torch.Tensor, target_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``output_at`` for :meth:`run_layers`: each sequence's last item, or None (every
        position) when ``target_mask`` asks for several."""
        return item_seq_len - 1 if target_mask is None else None

    def forward(self, item_seq, item_seq_len, target_mask=None):
        """The next-item representation; each model writes its own (see the class docstring)."""
        raise NotImplementedError

    # -------------------------------------------------------------- streaming
    def stream_start(self, batch: int = 1, device=None, dtype=None) -> Dict[str, object]:
        """The recurrent state of ``batch`` empty sequences (see :meth:`stream_step`)."""
        dtype = dtype or self.item_embedding.weight.dtype
        return {
            "layers": [layer.mamba.empty_state(batch, device, dtype) for layer in self.mamba_layers],
            "position": torch.zeros(batch, dtype=torch.long, device=device),
            "output": None,
        }

    def stream_step(self, items: torch.Tensor, state: Dict[str, object]) -> Dict[str, object]:
        """Fold one more item per sequence into the state, in O(1) time and memory.

        Mamba's recurrent form: each layer keeps its convolution window and
        SSM state; everything else is position-wise.  ``state["output"]`` is
        the representation :meth:`forward` gives for the whole sequence so far
        (the full recurrence, however long the sequence).
        """
        positions = state["position"]
        x = self.embed(items.unsqueeze(1), positions.unsqueeze(1))[:, 0]
        layers = []
        for layer, layer_state in zip(self.mamba_layers, state["layers"]):
            x, layer_state = layer.step(x, layer_state, positions)
            layers.append(layer_state)
        return {"layers": layers, "position": positions + 1, "output": self.readout(x)}

    # ---------------------------------------------------------------- scoring
    def item_table(self) -> torch.Tensor:
        """Item representations used for scoring, (n_items, d)."""
        return self.item_embedding.weight

    def score_all(self, seq_output: torch.Tensor) -> torch.Tensor:
        """Scores of every item, (batch, n_items)."""
        return torch.matmul(seq_output, self.item_table().transpose(0, 1))

    def score_items(self, seq_output: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of one item per row, (batch,)."""
        return (seq_output * self.item_table()[items]).sum(-1)

    def score_candidates(self, seq_output: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of the same items for every row, (batch, len(items))."""
        return seq_output @ self.item_table()[items].transpose(0, 1)

    # ----------------------------------------------------------------- layers
    #: Build each layer's feed-forward block before its mixer.  The order in
    #: which parameters are created sets what they draw from the random number
    #: generator; it is kept per model so that a seed reproduces earlier runs.
    ffn_first = False

    def build_layers(self, config) -> nn.ModuleList:
        """``num_layers`` :class:`MambaLayer` s of :meth:`build_mixer` and :meth:`build_ffn`."""
        return nn.ModuleList(self.build_layer(config, i) for i in range(config["num_layers"]))

    def build_layer(self, config, i: int) -> MambaLayer:
        if self.ffn_first:
            ffn = self.build_ffn(config, i)
            mixer = self.build_mixer(config, i)
        else:
            mixer = self.build_mixer(config, i)
            ffn = self.build_ffn(config, i)
        return MambaLayer(
            mixer, ffn, self.hidden_size, config["dropout_prob"], self.layer_residual(config, i), self.layer_norm_eps
        )

    def mamba_kwargs(self, config) -> dict:
        """The Mamba block's settings from the config (for :meth:`build_mixer` overrides too)."""
        return dict(
            d_model=self.hidden_size,
            d_state=config["d_state"],
            d_conv=config["d_conv"],
            expand=config["expand"],
            scan_backend=config["scan_backend"],
        )

    def build_mixer(self, config, i: int) -> nn.Module:
        """Layer i's sequence mixer: Mamba4Rec's Mamba block."""
        return Mamba(**self.mamba_kwargs(config))

    def build_ffn(self, config, i: int) -> nn.Module:
        """Layer i's position-wise feed-forward block: Mamba4Rec's FFN (inner width 4d)."""
        return FeedForward(self.hidden_size, 4 * self.hidden_size, config["dropout_prob"], eps=self.layer_norm_eps)

    def layer_residual(self, config, i: int) -> bool:
        """Mamba4Rec: a residual connection around the mixer only when layers are stacked."""
        return config["num_layers"] > 1

    # ------------------------------------------------------------------- init
    #: Draw Linear and Embedding weights from N(0, initializer_range) (RecBole's
    #: init); False keeps PyTorch's default init for them (HMamba's Full model).
    redraw_weights = True

    def init_weights(self, config) -> None:
        """RecBole's initialisation, then :meth:`init_extra`, then (optionally) Mamba's own.

        Linear and Embedding weights ~ N(0, ``initializer_range``) (which also
        overrides Mamba's delta initialisation), Linear biases 0, LayerNorm
        (1, 0); ``mamba_native_init: True`` re-applies mamba-ssm's
        initialisation to every Mamba block afterwards.
        """
        for module in self.modules():
            if self.redraw_weights and isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(0.0, self.initializer_range)
            elif isinstance(module, nn.LayerNorm):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        self.init_extra()
        if config["mamba_native_init"]:
            for module in self.modules():
                if isinstance(module, Mamba):
                    module.reset_parameters()

    def init_extra(self) -> None:
        """A model's own initialisation after RecBole's (nothing by default)."""

    # ---------------------------------------------------------------- reports
    def epoch_report(self) -> List[str]:
        """Lines the trainer logs after every epoch: each mixture-of-experts layer's load (then reset)."""
        lines = []
        for i, layer in enumerate(getattr(self, "mamba_layers", ())):
            ffn = getattr(layer, "ffn", None)
            if isinstance(ffn, MoEFeedForward):
                lines.append(f"layer {i} {ffn.load_report()}")
                ffn.reset_load()
        return lines

    # ----------------------------------------------------------------- losses
    def add_loss(self, name: str, value: torch.Tensor) -> None:
        """Add a named scalar term to this training step's loss (call it in the forward pass)."""
        self._extra_losses[name] = value

    def extra_losses(self) -> Dict[str, torch.Tensor]:
        """The named extra terms of the last forward pass, consumed: the model's own
        (:meth:`add_loss`), then each mixture-of-experts layer's balance term."""
        terms, self._extra_losses = self._extra_losses, {}
        for i, layer in enumerate(getattr(self, "mamba_layers", ())):
            ffn = getattr(layer, "ffn", None)
            value = getattr(ffn, "balance_loss", None)
            if value is not None:
                terms[f"load_balance_{i}"] = value
                ffn.balance_loss = None
        return terms

    def training_pairs(self, interaction):
        """(outputs, targets, negatives) of every (history -> next item) pair in a batch.

        RecBole's augmented rows give one pair per row (the last position);
        full-sequence windows (``train_mode: full_sequence``) give one pair per
        non-padding position.  ``negatives`` are the sampled items for BPR
        (RecBole's sampler for augmented rows, uniform per position for
        windows) and None for CE.
        """
        targets_seq = interaction[self.TARGET_SEQ] if self.TARGET_SEQ in interaction else None
        item_seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        if targets_seq is None:
            out = self.forward(item_seq, lengths)
            targets = interaction[self.POS_ITEM_ID]
            negatives = interaction[self.NEG_ITEM_ID] if self.loss_type == "BPR" else None
            return out, targets, negatives
        width = trim_padding(item_seq, lengths).shape[1]
        mask = targets_seq[:, :width] > 0
        out = self.forward(item_seq, lengths, target_mask=mask)
        targets = targets_seq[:, :width][mask]
        negatives = None
        if self.loss_type == "BPR":
            negatives = uniform_negatives(targets, self.n_items)
        return out, targets, negatives

    def main_loss(self, out, targets, negatives=None) -> torch.Tensor:
        if self.loss_type == "SampledSoftmax":
            shared = self.candidate_sampler(self.sampled_softmax_negatives)
            log_q = self.candidate_sampler.log_q if self.sampled_softmax_logq else None
            return sampled_softmax_loss(
                self.score_items(out, targets), self.score_candidates(out, shared), targets, shared, log_q
            )
        if self.loss_type == "BPR":
            return self.loss_fct(self.score_items(out, targets), self.score_items(out, negatives))
        if self.dot_product_scores:
            # Dot-product scores: the same loss without materialising every logit.
            return linear_cross_entropy(out, self.item_table(), targets)
        return self.loss_fct(self.score_all(out), targets)

    def calculate_loss(self, interaction):
        """Training loss; a tuple (main, *extra) when extra terms exist, named by :attr:`loss_names`.

        RecBole's trainer sums the tuple; the plugin's trainer logs each part by name.
        """
        out, targets, negatives = self.training_pairs(interaction)
        loss = global_mean_part(self.main_loss(out, targets, negatives), targets)
        extra = self.extra_losses()
        self.loss_names = ("main", *extra) if extra else ("loss",)
        return (loss, *extra.values()) if extra else loss

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        self.extra_losses()
        return self.score_items(seq_output, interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        self.extra_losses()
        return self.score_all(seq_output)
