"""Text (context, continuation) pairs -> token pairs -> log-likelihoods, as lm-eval computes them.

Tokenisation is lm-evaluation-harness's (`TemplateLM._encode_pair`): trailing spaces of the
context move to the continuation, and both token lists come from the tokenisation of the whole
string, split after the context's own tokens, so that a word is never broken differently than
the model would see it in running text. No special tokens are added (lm-eval's default for
causal models); an empty context becomes the BOS token (or EOS when there is no BOS).
"""

from __future__ import annotations

from typing import Callable, Sequence

from lmlab.engine.scoring import Score, score


def prefix_token_id(tokenizer) -> int:
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.eos_token_id


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    # The backend's batch encoder tokenises in parallel threads; same ids as encode().
    return [e.ids for e in tokenizer.backend.encode_batch(texts, add_special_tokens=False)]


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    contexts, wholes, empty = [], [], []
    for context, continuation in pairs:
        if context == "":
            empty.append(True)
            contexts.append("")
            wholes.append(continuation)
            continue
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        empty.append(False)
        contexts.append(context)
        wholes.append(context + continuation)
    unique = list(dict.fromkeys(c for c in contexts if c))  # many choices share one context
    ctx_ids = dict(zip(unique, _encode_many(tokenizer, unique)))
    whole_ids = _encode_many(tokenizer, wholes)
    prefix = prefix_token_id(tokenizer)
    out = []
    for context, whole, is_empty in zip(contexts, whole_ids, empty):
        if is_empty:  # lm-eval: BOS as the context, unless the continuation starts with it
            out.append(([prefix], whole) if whole[:1] != [prefix] else (whole[:1], whole[1:]))
        else:
            c = ctx_ids[context]
            out.append((c, whole[len(c):]))
    return out


def loglikelihoods(lm, pairs: Sequence[tuple[str, str]], *, max_length: int | None = None,
                   progress: Callable[[int], None] | None = None) -> list[Score]:
    """log P(continuation | context) for text pairs, through the engine's scoring path."""
    return score(lm.model, encode_pairs(lm.tokenizer, pairs), max_length=max_length, progress=progress)
