"""Generation v0: KV-cached, batched (left-padded) auto-regressive decoding.

One prefill pass over the prompts, then one token per step for every unfinished row, until a
stop token or the length limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lmlab.engine.kv_cache import KVCache
from lmlab.engine.sampling import SamplingParams, next_tokens
from lmlab.errors import LmlabError
from lmlab.model.transformer import Transformer


@dataclass
class Generation:
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token) or "length"
    prompt_tokens: int


@torch.inference_mode()
def generate(model: Transformer, prompts: list[list[int]], params: SamplingParams,
             on_token: Callable[[int, int], None] | None = None, pad_id: int = 0) -> list[Generation]:
    """Continue each prompt (a list of ids). `on_token(row, id)` is called for each new token."""
    ctx = model.config.max_seq_len
    for ids in prompts:
        if not ids:
            raise LmlabError("empty prompt: nothing to continue")
        if len(ids) >= ctx:
            raise LmlabError(f"prompt has {len(ids)} tokens; the model's context is {ctx} tokens")
    B, L = len(prompts), max(map(len, prompts))
    budget = min(params.max_new_tokens, ctx - L)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype

    ids = torch.full((B, L), pad_id, dtype=torch.long, device=device)
    key_mask = torch.zeros((B, L + budget), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):  # left padding keeps every row's last token at column L-1
        ids[i, L - len(p):] = torch.tensor(p, device=device)
        key_mask[i, L - len(p):] = True
    padded = not bool(key_mask[:, :L].all())
    positions = (key_mask[:, :L].long().cumsum(-1) - 1).clamp(min=0)

    generators = None
    if params.seed is not None:
        generators = [torch.Generator(device=device).manual_seed(params.seed) for _ in range(B)]
    stop = set(params.stop_token_ids)
    cache = KVCache(model.config, B, L + budget, dtype=dtype, device=device)
    out = [Generation([], "length", len(p)) for p in prompts]
    done = [False] * B

    logits = model(ids, positions, key_mask[:, :L] if padded else None, cache, last_only=True)[:, -1]
    for step in range(budget):
        tokens = next_tokens(logits, params, generators)
        for i, t in enumerate(tokens.tolist()):
            if done[i]:
                continue
            if t in stop:
                out[i].finish_reason, done[i] = "stop", True
                continue
            out[i].token_ids.append(t)
            if on_token is not None:
                on_token(i, t)
        if all(done) or step == budget - 1:
            break
        positions = positions[:, -1:] + 1
        S = L + step + 1
        logits = model(tokens[:, None], positions, key_mask[:, :S] if padded else None, cache)[:, -1]
    return out
