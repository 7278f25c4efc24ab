"""Sampled softmax with the logQ correction, for catalogs too large to score in full.

Full cross-entropy scores every item at every target: ``(targets, items)``
logits per step.  The sampled softmax scores each target against its own item
and ``N`` negatives shared by the whole batch, drawn from a proposal ``q``
(uniform over the items, or by training popularity):

    loss_i = -s_i(y_i)' + log( exp s_i(y_i)' + sum_k exp s_i(n_k)' ),
    s' = s - log q  (the logQ correction, Bengio & Senecal; Jean et al. 2015),

so that, in expectation, the sampled partition function estimates the full
one even when popular items are drawn more often.  A negative equal to the
row's target (an "accidental hit") is left out of that row.  With a uniform
``q`` the correction shifts every logit by the same constant and changes
nothing; with every item as a negative it is exactly the full cross-entropy.
Evaluation is unaffected: it still ranks every item.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["CandidateSampler", "sampled_softmax_loss"]


class CandidateSampler(torch.nn.Module):
    """Draws shared negatives from item ids 1..n_items-1 (0 is padding).

    ``counts``: training frequency of each item (popularity sampling,
    q proportional to the count); None for uniform sampling.
    """

    def __init__(self, n_items: int, counts: Optional[torch.Tensor] = None):
        super().__init__()
        if counts is None:
            probs = torch.ones(n_items, dtype=torch.float64)
        else:
            probs = counts.to(torch.float64).clone()
            if probs.shape != (n_items,):
                raise ValueError(f"counts must have one entry per item ({n_items}), got {tuple(probs.shape)}")
        probs[0] = 0.0
        if probs.sum() <= 0:
            raise ValueError("no item can be sampled: every count is zero")
        probs = probs / probs.sum()
        self.uniform = counts is None
        self.register_buffer("probs", probs.float(), persistent=False)
        # log q for the correction.  Items never drawn (q = 0) only ever appear
        # as targets; they get the smallest drawn item's log q, not -inf.
        floor = probs[probs > 0].min()
        self.register_buffer("log_q", probs.clamp_min(floor).log().float(), persistent=False)

    def forward(self, n: int) -> torch.Tensor:
        """``n`` item ids, drawn with replacement (torch's global generator)."""
        if self.uniform:
            return torch.randint(1, self.probs.shape[0], (n,), device=self.probs.device)
        return torch.multinomial(self.probs, n, replacement=True)


def sampled_softmax_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean sampled-softmax loss.

    pos_scores (n,): score of each row's target; neg_scores (n, N): scores of
    the shared negatives; targets (n,), negatives (N,): item ids; log_q
    (n_items,): log proposal probabilities for the correction, or None.
    """
    pos = pos_scores.float()
    neg = neg_scores.float()
    if log_q is not None:
        pos = pos - log_q[targets]
        neg = neg - log_q[negatives].unsqueeze(0)
    neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean()
