"""Decoding parameters and the logits processors that turn them into a next token.

Order of application: temperature, top-k, top-p, then sample (temperature 0 = greedy argmax).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmlab.errors import LmlabError


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise LmlabError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise LmlabError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LmlabError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise LmlabError(f"top_k must be >= 0 (0 = off), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def process_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Scaled and truncated logits [B, V] (removed candidates set to -inf)."""
    logits = logits.float() / p.temperature
    if p.top_k:
        kth = torch.topk(logits, min(p.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1:
        # Keep the smallest set of most-likely tokens whose probability reaches top_p.
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = (cum - sorted_logits.softmax(-1)) >= p.top_p  # mass before this token already enough
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_tokens(logits: torch.Tensor, p: SamplingParams, generators: list[torch.Generator] | None) -> torch.Tensor:
    """Pick one token per row of logits [B, V]; one generator per row keeps seeds per request."""
    if p.greedy:
        return logits.argmax(-1)
    probs = process_logits(logits, p).softmax(-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
