"""Mixture-of-experts feed-forward block (HyMoERec; reused by HM2Rec).

For a token x (after the Mamba block), with E experts f_1..f_E, each shaped
like the dense feed-forward MLP:

* router: logits pi(x) (``router: mlp`` = Linear(d, d) -> ReLU -> Linear(d, E),
  the "two-layer linear computation" of HyMoERec; ``router: linear`` = one
  Linear(d, E));
* top-k routing: keep the K largest logits, g = softmax over the kept ones,
  ``y_moe = sum_{i in TopK} g_i f_i(x)``;
* optional dense shared expert and adaptive fusion:
  ``y = y_dense + alpha * y_moe`` with
  ``alpha = sigmoid(alpha_param) * min(1, t / T_warmup)``, t the number of
  training steps taken so far (a buffer: saved with checkpoints, not advanced
  in eval mode).  ``fusion: sum`` uses ``y_dense + y_moe``; without a shared
  expert ``y = y_moe``;
* output ``LayerNorm(x + Dropout(y))``, as Mamba4Rec's feed-forward block;
* load-balance term ``lambda_lb * sum_e gbar_e log gbar_e``, gbar_e the
  average over non-padding tokens of expert e's full-softmax router
  probability (so every expert gets a gradient); exposed as ``balance_loss``
  after a training forward pass and added to the training loss by the model
  (named ``load_balance_<layer>``).

Padding tokens never enter the routing statistics.  When only some positions
are needed (``output_at``), the router still sees every token, so the
statistics are those of the whole sequence, but the experts run only where
outputs are read.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn

from recbole_hyper.layers.ffn import GeluMLP

__all__ = ["MoEFeedForward", "check_moe_settings"]


def check_moe_settings(n_experts, top_k, warmup_steps, lambda_lb) -> List[str]:
    """Problems with a MoE configuration, as messages (empty when valid)."""
    problems = []
    if not isinstance(n_experts, int) or n_experts < 1:
        problems.append(f"n_experts = {n_experts!r}: must be an integer >= 1")
    if not isinstance(top_k, int) or top_k < 1:
        problems.append(f"top_k = {top_k!r}: must be an integer >= 1")
    elif isinstance(n_experts, int) and top_k > n_experts:
        problems.append(f"top_k = {top_k}: must not exceed n_experts = {n_experts}")
    if not isinstance(warmup_steps, (int, float)) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        problems.append(f"moe_warmup_steps = {warmup_steps!r}: must be a number >= 0")
    if not isinstance(lambda_lb, (int, float)) or lambda_lb < 0:
        problems.append(f"lambda_lb = {lambda_lb!r}: must be a number >= 0")
    return problems


class MoEFeedForward(nn.Module):
    """Routed experts (+ optional shared dense expert) in Mamba4Rec's FFN wrapper."""


    def __init__(
        self,
        d_model: int,
        inner_size: int,
        dropout: float,
        n_experts: int = 4,
        top_k: int = 2,
        shared_expert: bool = True,
        fusion: str = "adaptive",
        warmup_steps: float = 500,
        lambda_lb: float = 0.02,
        router: str = "mlp",
        eps: float = 1e-12,
    ):
        super().__init__()
        problems = check_moe_settings(n_experts, top_k, warmup_steps, lambda_lb)
        if fusion not in ("adaptive", "sum"):
            problems.append(f"moe_fusion = {fusion!r}: must be 'adaptive' or 'sum'")
        if router not in ("mlp", "linear"):
            problems.append(f"moe_router = {router!r}: must be 'mlp' or 'linear'")
        if problems:
            raise ValueError("Invalid mixture-of-experts settings:\n  " + "\n  ".join(problems))
        self.n_experts = n_experts
        self.top_k = top_k
        self.fusion = fusion
        self.warmup_steps = float(warmup_steps)
        self.lambda_lb = float(lambda_lb)

        if router == "mlp":
            self.router = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, n_experts))
        else:
            self.router = nn.Linear(d_model, n_experts)
        self.experts = nn.ModuleList([GeluMLP(d_model, inner_size, dropout) for _ in range(n_experts)])
        self.shared = GeluMLP(d_model, inner_size, dropout) if shared_expert else None
        self.alpha_param = nn.Parameter(torch.zeros(())) if shared_expert and fusion == "adaptive" else None
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=eps)
        # Optimizer steps taken so far (training forward passes); persistent.
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        # Tokens routed to each expert since the last reset (not saved).
        self.register_buffer("load_counts", torch.zeros(n_experts, dtype=torch.long), persistent=False)
        self.balance_loss: Optional[torch.Tensor] = None

    @property
    def needs_every_token(self) -> bool:
        """In training, the balance term needs the router at every token even
        when the output is read at one position per sequence."""
        return self.lambda_lb > 0

    # ---------------------------------------------------------------- routing
    def route(self, x: torch.Tensor):
        """Router for tokens x (T, d): (full softmax probs, top-k indices, top-k gates)."""
        logits = self.router(x)
        top_logits, top_idx = logits.topk(self.top_k, dim=-1)
        gates = torch.softmax(top_logits, dim=-1)
        return torch.softmax(logits, dim=-1), top_idx, gates

    def fusion_weight(self) -> torch.Tensor:
        """alpha = sigmoid(alpha_param) * min(1, t / T_warmup)."""
        if self.alpha_param is None:
            return torch.ones(())
        ramp = 1.0 if self.warmup_steps == 0 else min(1.0, self.num_steps.item() / self.warmup_steps)
        return torch.sigmoid(self.alpha_param) * ramp

    def balance_term(self, probs: torch.Tensor) -> torch.Tensor:
        """lambda_lb * sum_e gbar_e log gbar_e over the given tokens' probs (T, E)."""
        gbar = probs.mean(0)
        return self.lambda_lb * (gbar * torch.log(gbar.clamp_min(1e-12))).sum()

    def expert_load(self) -> torch.Tensor:
        """Fraction of routed (token, slot) assignments per expert since the last reset."""
        total = self.load_counts.sum()
        if total == 0:
            return torch.zeros(self.n_experts)
        return self.load_counts.float().cpu() / total.float().cpu()

    def reset_load(self) -> None:
        self.load_counts.zero_()

    def load_report(self) -> str:
        """One line: the expert load since the last reset (and the fusion weight with a shared expert)."""
        line = "expert load: " + " ".join(f"e{e}={v:.3f}" for e, v in enumerate(self.expert_load().tolist()))
        if self.shared is not None:
            line += f" | alpha={float(self.fusion_weight().detach()):.3f} step={int(self.num_steps)}"
        return line

    # ---------------------------------------------------------------- forward
    def _mixture(self, x: torch.Tensor, top_idx: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """sum_k gates[:, k] * f_{top_idx[:, k]}(x), computing each expert on its tokens only."""
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(top_idx == e, as_tuple=True)
            if token.numel() == 0:
                continue
            y = expert(x[token]) * gates[token, slot].unsqueeze(-1)
            out = out.index_add(0, token, y)
        return out

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor = None, output_at: torch.Tensor = None
    ) -> torch.Tensor:
        """x (batch, L, d) -> (batch, L, d), or (batch, d) read at ``output_at`` (batch,) time indices.

        ``mask`` (batch, L) marks real (non-padding) tokens; x may also be
        already gathered, (batch, d), with a matching (batch,) mask.
        """
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        valid = mask.reshape(-1) if mask is not None else torch.ones(flat.shape[0], dtype=torch.bool, device=x.device)
        probs, top_idx, gates = self.route(flat)

        if self.training:
            real = valid.nonzero(as_tuple=True)[0]
            self.balance_loss = self.balance_term(probs[real]) if self.lambda_lb > 0 else None
            self.load_counts += torch.bincount(top_idx[real].reshape(-1), minlength=self.n_experts)

        if output_at is not None and x.dim() == 3:
            rows = torch.arange(shape[0], device=x.device)
            pick = rows * shape[1] + output_at
            flat, top_idx, gates = flat[pick], top_idx[pick], gates[pick]
        y = self._mixture(flat, top_idx, gates)
        if self.shared is not None:
            dense = self.shared(flat)
            if self.fusion == "adaptive":
                y = dense + self.fusion_weight().to(y.dtype) * y
            else:
                y = dense + y
        out = self.LayerNorm(flat + self.dropout(y))
        if self.training and torch.is_grad_enabled():
            self.num_steps += 1
        if output_at is not None and x.dim() == 3:
            return out
        return out.reshape(shape)
