"""Log-likelihood scoring: log P(continuation | context) for many (context, continuation) pairs.

This is the evaluator's path through the model (multiple choice, perplexity). Its rule is that
no token is computed twice. Requests are sorted by their input tokens, so requests that share
a prefix (the four endings of one HellaSwag context, the five-shot prefix of an MMLU subject)
lie next to each other, and each row of a batch holds a *prefix trie* of several requests:
every distinct prefix token appears once, and attends to its ancestors only (tree attention,
as in speculative decoding's token trees). A token's position is its depth in the trie, so the
result is exactly what a forward pass over each request alone would give.

The vocabulary projection, the other big cost, runs only on the positions that predict a
continuation token, once per distinct position.

Inputs are built as lm-evaluation-harness builds them: `(context + continuation)[-(L+1):][:-1]`
with L the longest sequence the model takes, so truncation from the left matches too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from lmlab.errors import LmlabError


@dataclass
class Score:
    logprob: float  # sum of the continuation tokens' log-probs
    greedy: bool  # every continuation token was the argmax (lm-eval's is_greedy)
    token_logprobs: list[float]


class _TreeAttention:
    """Stands in for a KV cache (see lmlab.model.transformer): keys are this forward's own, and
    the mask is the trie's ancestor relation, so each token sees only its own prefix."""

    length = 0

    def __init__(self, allowed: torch.Tensor | None, positions: torch.Tensor, dtype: torch.dtype):
        self.allowed, self.positions, self.dtype = allowed, positions, dtype  # [B, 1, T, T] bool or None, [B, T]
        self.masks: dict = {}

    def update(self, layer, k, v):
        return k, v

    def mask(self, T, key_mask, window, device):
        if window is not None and self.allowed is None and int(self.positions.max()) < window:
            window = None  # a window longer than every row changes nothing
        if window not in self.masks:
            self.masks[window] = self._additive(T, window, device)
        return self.masks[window]

    def _additive(self, T, window, device):
        allowed = self.allowed
        if window is not None:
            if allowed is None:  # plain causal rows
                i = torch.arange(T, device=device)
                allowed = (i[None, :] <= i[:, None])[None, None]
            allowed = allowed & ((self.positions[:, None, :, None] - self.positions[:, None, None, :]) < window)
        if allowed is None:
            return None
        # An additive float mask, built once: SDPA converts a boolean one on every call (every layer).
        return torch.zeros(allowed.shape, dtype=self.dtype, device=device).masked_fill_(~allowed, float("-inf"))

    def advance(self, n):
        pass


@dataclass
class _Row:
    tokens: list[int]
    depth: list[int]
    paths: list[tuple[int, np.ndarray]]  # (request index, node index of each input token)
    chain: bool  # one unbranched path: plain causal attention suffices


# Attention within a row costs (row length)^2, wasted between requests that share nothing, so
# rows stay short (row_tokens) unless the requests share a long prefix: then one long row
# (up to max_row_tokens) computes it once. Sharing 64 tokens saves more than the extra
# attention of a 2048-token row costs.
MIN_SHARED = 64


def _pack(inputs: list[list[int]], order: list[int], row_tokens: int, max_row_tokens: int) -> list[_Row]:
    """Insert the requests, in sorted order, into tries of at most `row_tokens` nodes, or
    `max_row_tokens` for requests that share at least MIN_SHARED tokens with the previous one.

    In lexicographic order a request shares with the trie exactly the prefix it shares with
    the previous request, so insertion needs no trie lookups."""
    rows: list[_Row] = []
    row, prev, prev_path = None, [], np.zeros(0, dtype=np.int64)
    for i in order:
        seq = inputs[i]
        lcp = 0
        if row is not None:
            n = min(len(seq), len(prev))
            while lcp < n and seq[lcp] == prev[lcp]:
                lcp += 1
        size = len(row.tokens) + len(seq) - lcp if row is not None else 0
        if row is None or size > (max_row_tokens if lcp >= MIN_SHARED else row_tokens):
            row, lcp = _Row([], [], [], True), 0
            rows.append(row)
        elif lcp < len(prev):
            row.chain = False  # a branch: the trie is a tree, not a single causal sequence
        start = len(row.tokens)
        row.tokens.extend(seq[lcp:])
        row.depth.extend(range(lcp, len(seq)))
        path = np.concatenate([prev_path[:lcp], np.arange(start, start + len(seq) - lcp)])
        row.paths.append((i, path))
        prev, prev_path = seq, path
    return rows


def _ancestor_mask(row: _Row, T: int) -> np.ndarray:
    """[T, T] bool: node q may attend to node k when k is on q's path from the root."""
    m = np.zeros((T, T), dtype=bool)
    for _, path in row.paths:
        m[np.ix_(path, path)] |= np.tril(np.ones((len(path), len(path)), dtype=bool))
    # Padding queries see themselves only (no all-masked softmax rows, hence no NaN).
    n = len(row.tokens)
    m[np.arange(n, T), np.arange(n, T)] = True
    return m


@torch.inference_mode()
def score(model, requests: Sequence[tuple[list[int], list[int]]], *, max_length: int | None = None,
          row_tokens: int = 256, max_row_tokens: int = 2048, batch_tokens: int = 2048,
          progress: Callable[[int], None] | None = None) -> list[Score]:
    """Log-likelihood of each continuation given its context (both token-id lists).

    row_tokens / max_row_tokens: trie size per row, without / with a long shared prefix (a
    longer request gets a row of its own);
    batch_tokens: rows x row length per forward pass (memory and matmul size);
    progress(n): called with the number of requests finished by each forward pass."""
    L = max_length or model.config.max_seq_len
    inputs, conts = [], []
    for i, (ctx, cont) in enumerate(requests):
        if not cont:
            raise LmlabError(f"request {i}: empty continuation (nothing to score)")
        if not ctx:
            raise LmlabError(f"request {i}: empty context (give at least a BOS token)")
        if len(cont) > L:
            raise LmlabError(f"request {i}: continuation of {len(cont)} tokens exceeds the model's {L}")
        inputs.append((list(ctx) + list(cont))[-(L + 1):][:-1])
        conts.append(list(cont))
    order = sorted(range(len(inputs)), key=lambda i: inputs[i])
    rows = _pack(inputs, order, row_tokens, max_row_tokens)

    results: list[Score | None] = [None] * len(requests)
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    # Batching rows in order of length wastes little on padding.
    rows.sort(key=lambda r: len(r.tokens))
    b = 0
    while b < len(rows):
        e = b + 1
        while e < len(rows) and (e - b + 1) * len(rows[e].tokens) <= batch_tokens:
            e += 1
        batch = rows[b:e]
        T = max(len(r.tokens) for r in batch)
        tokens = torch.zeros(len(batch), T, dtype=torch.long)
        depth = torch.zeros(len(batch), T, dtype=torch.long)
        for j, r in enumerate(batch):
            tokens[j, :len(r.tokens)] = torch.tensor(r.tokens)
            depth[j, :len(r.tokens)] = torch.tensor(r.depth)
        if all(r.chain for r in batch):
            allowed = None  # right-padded chains: causal attention never reaches the padding
        else:
            allowed = torch.from_numpy(np.stack([_ancestor_mask(r, T) for r in batch]))[:, None]
        tokens, depth = tokens.to(dev), depth.to(dev)
        tree = _TreeAttention(allowed.to(dev) if allowed is not None else None, depth, dtype)
        h = model.hidden_states(tokens, depth, cache=tree)
        _read_scores(model, h, batch, inputs, conts, results)
        if progress:
            progress(sum(len(r.paths) for r in batch))
        b = e
    return results


def _read_scores(model, h, batch: list[_Row], inputs, conts, results, chunk: int = 512) -> None:
    """Project only the positions that predict a continuation token, each one once."""
    where: dict[tuple[int, int], int] = {}  # (row, node) -> index among the projected positions
    plan = []  # (request, indices of the positions predicting its continuation tokens)
    for j, r in enumerate(batch):
        for i, path in r.paths:
            # Input node p predicts token p+1, so the continuation is read off the last
            # len(continuation) input nodes.
            nodes = path[len(inputs[i]) - len(conts[i]):]
            plan.append((i, [where.setdefault((j, int(node)), len(where)) for node in nodes]))
    hs = h[torch.tensor([k[0] for k in where]), torch.tensor([k[1] for k in where])]
    pos = torch.tensor([p for _, idx in plan for p in idx], device=h.device)
    tgt = torch.tensor([t for i, _ in plan for t in conts[i]], device=h.device)
    tok_lp = torch.empty(len(pos), device=h.device)
    hit = torch.empty(len(pos), dtype=torch.bool, device=h.device)
    # Full-vocabulary logits are big (positions x vocab floats): a chunk at a time, and only
    # what is needed from each: log p(target), and whether the target is the top logit (a fused
    # log_softmax and a max: ~15% less time per chunk than logsumexp and argmax; an exact tie
    # for the top counts as greedy).
    for s in range(0, len(hs), chunk):
        logits = model.lm_head(hs[s:s + chunk]).float()
        sel = ((pos >= s) & (pos < s + chunk)).nonzero()[:, 0]
        rows, t = pos[sel] - s, tgt[sel]
        top = logits.amax(-1)[rows]
        hit[sel] = logits[rows, t] == top
        tok_lp[sel] = logits.log_softmax(-1)[rows, t]
    tok_lp, hit = tok_lp.cpu(), hit.cpu()
    k = 0
    for i, idx in plan:
        n = len(idx)
        results[i] = Score(float(tok_lp[k:k + n].double().sum()), bool(hit[k:k + n].all()),
                           tok_lp[k:k + n].tolist())
        k += n
