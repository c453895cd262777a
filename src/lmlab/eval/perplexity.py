"""Perplexity of texts with rolling windows, as lm-eval's `loglikelihood_rolling` computes it.

A text's tokens are cut into windows of at most `max_length` predicted tokens; the first window
is conditioned on the BOS token, each later one on the tokens just before it (the window is
filled with as much earlier context as the model takes), so every token is predicted exactly
once. Corpus metrics weight each text by its size, as lm-eval does:

    token_perplexity = exp(-sum(ll) / sum(tokens))
    word_perplexity  = exp(-sum(ll) / sum(words))      words = len(re.split(r"\\s+", text))
    byte_perplexity  = exp(-sum(ll) / sum(bytes))      bytes = len(text.encode("utf-8"))
    bits_per_byte    = -sum(ll) / sum(bytes) / ln 2
"""

from __future__ import annotations

import math
import re
from typing import Callable

from lmlab.engine.scoring import score
from lmlab.eval.loglik import prefix_token_id
from lmlab.eval.tasks import Item


def rolling_windows(tokens: list[int], prefix: int, max_length: int, context_len: int = 1):
    """(context, continuation) token pairs that predict every token once: lm-eval's
    get_rolling_token_windows followed by make_disjoint_window."""
    if not tokens:
        return []
    pred_len = max_length - context_len + 1
    first = min(max_length, len(tokens))
    windows = [([prefix] + tokens[:first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, pred_len)
        end = done + n
        windows.append((tokens[max(end - max_length - 1, 0):end - 1], tokens[end - n:end]))
        done += n
    # Disjoint: the context keeps only what precedes the predicted tokens.
    return [(a[:len(a) - (len(b) - 1)], b) for a, b in windows]


def run(lm, items: list[Item], *, max_length: int | None = None,
        progress: Callable[[float], None] | None = None) -> tuple[list[dict], dict]:
    """Per-text samples and the corpus metrics."""
    L = max_length or lm.model.config.max_seq_len
    prefix = prefix_token_id(lm.tokenizer)
    requests, owner, n_tokens = [], [], []
    for item in items:
        toks = lm.tokenizer.encode(item.text, add_special_tokens=False)
        n_tokens.append(len(toks))
        for w in rolling_windows(toks, prefix, L):
            requests.append(w)
            owner.append(item.doc_id)
    per_request = len(items) / max(len(requests), 1)
    scores = score(lm.model, requests, max_length=L,
                   progress=(lambda n: progress(n * per_request)) if progress else None)
    ll = {item.doc_id: 0.0 for item in items}
    for o, s in zip(owner, scores):
        ll[o] += s.logprob
    samples = []
    for item, nt in zip(items, n_tokens):
        words, nbytes = len(re.split(r"\s+", item.text)), len(item.text.encode("utf-8"))
        samples.append({"doc_id": item.doc_id, "where": item.record.where, "loglikelihood": ll[item.doc_id],
                        "tokens": nt, "words": words, "bytes": nbytes})
    return samples, corpus_metrics(samples)


def corpus_metrics(samples: list[dict]) -> dict:
    total = sum(s["loglikelihood"] for s in samples)
    tokens, words, nbytes = (sum(s[k] for s in samples) for k in ("tokens", "words", "bytes"))
    return {
        "token_perplexity": math.exp(-total / tokens) if tokens else float("nan"),
        "word_perplexity": math.exp(-total / words) if words else float("nan"),
        "byte_perplexity": math.exp(-total / nbytes) if nbytes else float("nan"),
        "bits_per_byte": -total / nbytes / math.log(2) if nbytes else float("nan"),
        "n": len(samples), "tokens": tokens,
    }
