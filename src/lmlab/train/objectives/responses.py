"""Responses to one prompt in one row: the prompt's tokens are computed once for all of them.

A row holds [prompt, response 1, ..., response n]; each response attends to the prompt and to
itself only, and its positions continue from the prompt, so every response gets exactly the
states a separate forward over prompt + response would give. A DPO pair costs P + 2R tokens
instead of 2(P + R), a GRPO group of K samples P + K*R instead of K(P + R).

The batch indexes response tokens flat: `pred` is where the state that predicts each response
token sits, `seq` which response the token belongs to; `last` is each response's last token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



class OnTrunk(nn.Module):
    """A head on a language model `self.lm` (value model, reward model). The trainer switches
    gradient checkpointing on the model it gets; it belongs to the trunk."""

    @property
    def gradient_checkpointing(self):
        return self.lm.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value):
        self.lm.gradient_checkpointing = value


class _Rows:
    """Stands in for a KV cache (see lmlab.model.transformer): keys are this forward's own, the
    mask is the rows' block structure."""

    length = 0

    def __init__(self, allowed: torch.Tensor, positions: torch.Tensor):
        self.allowed, self.positions = allowed, positions  # [B, 1, T, T] bool, [B, T]

    def update(self, layer, k, v):
        return k, v

    def mask(self, T, key_mask, window, device):
        if window is None:
            return self.allowed
        near = (self.positions[:, None, :, None] - self.positions[:, None, None, :]) < window
        return self.allowed & near

    def advance(self, n):
        pass


def pack(items: list[tuple[list[int], list[list[int]]]], pad_id: int = 0) -> dict:
    """items: (prompt ids, [response ids, ...]) per row. Responses are numbered in order, row
    by row; a response must have at least one token."""
    T = max(len(p) + sum(len(r) for r in rs) for p, rs in items)
    B = len(items)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    positions = torch.zeros((B, T), dtype=torch.long)
    block = torch.full((B, T), -1, dtype=torch.long)  # 0: prompt, k: response k, -1: padding
    pred, target, seq, last, lengths = [], [], [], [], []
    for b, (p, rs) in enumerate(items):
        ids[b, :len(p)] = torch.tensor(p)
        positions[b, :len(p)] = torch.arange(len(p))
        block[b, :len(p)] = 0
        at = len(p)
        for k, r in enumerate(rs, 1):
            n = len(r)
            ids[b, at:at + n] = torch.tensor(r)
            positions[b, at:at + n] = torch.arange(len(p), len(p) + n)
            block[b, at:at + n] = k
            # token j of the response is predicted by the previous token: the prompt's last
            # token for j = 0, else response token j - 1
            pred += [b * T + len(p) - 1] + [b * T + at + j for j in range(n - 1)]
            target += r
            seq += [len(lengths)] * n
            last.append(b * T + at + n - 1)
            lengths.append(n)
            at += n
    i = torch.arange(T)
    causal = i[None, :] <= i[:, None]
    q, k = block[:, :, None], block[:, None, :]
    allowed = causal & ((k == 0) | (k == q)) & (q >= 0) & (k >= 0)
    allowed = (allowed | torch.eye(T, dtype=torch.bool))[:, None]  # padding sees itself: no NaN rows
    return {"ids": ids, "positions": positions, "allowed": allowed,
            "pred": torch.tensor(pred), "target": torch.tensor(target), "seq": torch.tensor(seq),
            "last": torch.tensor(last), "lengths": torch.tensor(lengths),
            "tokens": sum(len(p) + sum(len(r) for r in rs) for p, rs in items)}


def hidden_states(model, batch: dict) -> torch.Tensor:
    """Final hidden states of the packed rows, flattened to [B*T, dim]."""
    h = model.hidden_states(batch["ids"], positions=batch["positions"],
                            cache=_Rows(batch["allowed"], batch["positions"]))
    return h.reshape(-1, h.shape[-1])


def token_logps(model, batch: dict, h: torch.Tensor | None = None, temperature: float = 1.0,
                entropy: bool = False):
    """Log-prob of each response token (flat, [N]); with entropy=True also the entropy of each
    predicting distribution. Only predicting positions go through the output layer."""
    h = hidden_states(model, batch) if h is None else h
    logits = model.lm_head(h[batch["pred"]]).float()
    if temperature != 1.0:
        logits = logits / temperature
    logps = -F.cross_entropy(logits, batch["target"], reduction="none")
    if not entropy:
        return logps
    with torch.no_grad():
        p = logits.softmax(-1)
        ent = torch.logsumexp(logits, -1) - (p * logits).sum(-1)
    return logps, ent


def per_sequence(values: torch.Tensor, batch: dict) -> torch.Tensor:
    """Sum of flat per-token values for each response: [S]."""
    return values.new_zeros(len(batch["lengths"])).index_add(0, batch["seq"], values)


def padded(values: torch.Tensor, batch: dict, fill: float = 0.0) -> torch.Tensor:
    """Flat per-token values as [S, longest response], right-padded with `fill`."""
    lengths = batch["lengths"]
    out = values.new_full((len(lengths), int(lengths.max())), fill)
    return out.masked_scatter(response_mask(batch), values)


def response_mask(batch: dict) -> torch.Tensor:
    lengths = batch["lengths"]
    return torch.arange(int(lengths.max()), device=lengths.device)[None, :] < lengths[:, None]
