"""Logits processors over a batch whose rows each have their own SamplingParams.

Every function takes logits [B, V] (float32) and returns new logits; rows whose parameters
leave a processor off are untouched. The order is documented in `engine/params.py`.
"""

from __future__ import annotations

import torch

from lmlab.engine.params import SamplingParams

NEG_INF = float("-inf")


def penalise(logits: torch.Tensor, params: list[SamplingParams], seen: list[torch.Tensor],
             counts: list[torch.Tensor]) -> torch.Tensor:
    """Repetition (over `seen`: prompt + output ids) and presence/frequency (output `counts` [V])."""
    for i, p in enumerate(params):
        if p.repetition_penalty != 1.0 and len(seen[i]):
            ids = seen[i]
            l = logits[i, ids]
            logits[i, ids] = torch.where(l > 0, l / p.repetition_penalty, l * p.repetition_penalty)
        if p.presence_penalty or p.frequency_penalty:
            c = counts[i]
            logits[i] -= p.frequency_penalty * c + p.presence_penalty * (c > 0).float()
    return logits


def bias(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    for i, p in enumerate(params):
        if p.logit_bias:
            ids = torch.tensor(list(p.logit_bias), device=logits.device)
            logits[i, ids] += torch.tensor(list(p.logit_bias.values()), device=logits.device)
    return logits


def warp(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p, typical-p; greedy rows are left as they are."""
    dev = logits.device
    temp = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=dev)
    logits = logits / temp[:, None]
    if any(p.top_k for p in params):
        V = logits.shape[-1]
        k = torch.tensor([min(p.top_k, V) if p.top_k else V for p in params], device=dev)
        kth = logits.topk(int(k.max()), dim=-1).values.gather(-1, (k - 1)[:, None])
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if any(p.top_p < 1 for p in params):
        top_p = torch.tensor([p.top_p for p in params], device=dev)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the mass of the tokens before it already reaches top_p.
        # Rows with top_p = 1 are left alone: float32 sums can reach 1.0 before the tail.
        drop = ((probs.cumsum(-1) - probs) >= top_p[:, None]) & (top_p[:, None] < 1)
        drop[:, 0] = False  # the most likely token always stays, however small top_p is
        logits = logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)
    if any(p.min_p > 0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], device=dev)
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p[:, None] * probs.max(-1, keepdim=True).values, NEG_INF)
    if any(p.typical_p < 1 for p in params):
        logits = _typical(logits, torch.tensor([p.typical_p for p in params], device=dev))
    return logits


def _typical(logits: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Locally typical sampling (Meister et al.): keep tokens whose surprise is closest to the
    entropy until their mass reaches typical_p (rows with typical_p = 1 keep everything)."""
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).nan_to_num().sum(-1, keepdim=True)
    shifted = (-logp - entropy).abs()
    sorted_shift, order = shifted.sort(dim=-1)
    cum = logits.softmax(-1).gather(-1, order).cumsum(-1)
    last = (cum < mass[:, None]).sum(-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    drop = sorted_shift > sorted_shift.gather(-1, last)
    drop = drop & (mass[:, None] < 1)
    return logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)


def unusable(logits: torch.Tensor) -> torch.Tensor:
    """[B] bool: rows that cannot be sampled (a NaN or +inf, or every token masked)."""
    return logits.isnan().any(-1) | (logits == float("inf")).any(-1) | (logits == NEG_INF).all(-1)


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row: argmax for greedy rows, else a draw from the row's own generator."""
    out = logits.argmax(-1)
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if rows:
        probs = logits[rows].softmax(-1)
        for j, i in enumerate(rows):
            out[i] = torch.multinomial(probs[j], 1, generator=generators[i])[0]
    return out
