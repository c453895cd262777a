"""PRO, preference ranking optimisation (Song et al. 2023): a listwise loss over n responses
ranked best first, plus SFT on the best.

With s_i the policy's mean per-token log-prob of response i, each position k of the ranking is
a softmax choice of response k among responses k..n:
    L = -sum_k log( exp(s_k / T_k^k) / sum_{i >= k} exp(s_i / T_k^i) ) - sft_weight * s_1
With reward scores r (best first) the temperatures come from the reward gaps,
T_k^i = 1 / (r_k - r_i) and T_k^k = min_{i > k} T_k^i, so a response far below k is pushed
down harder; without scores every T is 1.
"""

from __future__ import annotations

import torch

from lmlab.train.objectives import responses as R


def collate(items, pad_id: int = 0) -> dict:
    batch = R.pack([(r.prompt, r.responses) for r in items], pad_id)
    batch["counts"] = [len(r.responses) for r in items]
    batch["scores"] = [r.scores for r in items]
    return batch


def ranking_loss(s: torch.Tensor, scores: list[float] | None) -> torch.Tensor:
    """The listwise term for one ranking: s [n] mean log-probs, best first."""
    n = len(s)
    total = s.new_zeros(())
    for k in range(n - 1):
        if scores is None:
            w = s.new_ones(n - k)
        else:
            gaps = torch.tensor([scores[k] - scores[i] for i in range(k + 1, n)], dtype=s.dtype, device=s.device)
            w = torch.cat([gaps.max()[None], gaps])  # 1/T: T_k^k = min T_k^i is the largest gap
        z = s[k:] * w
        total = total - (z[0] - torch.logsumexp(z, 0))
    return total


def make_loss(sft_weight: float = 0.05):
    def loss(model, batch) -> tuple:
        lp = R.token_logps(model, batch)
        s = R.per_sequence(lp, batch) / batch["lengths"].to(lp.dtype)
        total, right, at = lp.new_zeros(()), 0, 0
        for n, scores in zip(batch["counts"], batch["scores"]):
            row = s[at:at + n]
            total = total + ranking_loss(row, scores) - sft_weight * row[0]
            right += int(row.argmax() == 0)
            at += n
        rows = len(batch["counts"])
        return total, rows, {"tokens": batch["tokens"], "top1_accuracy": right / rows}
    return loss
