"""The engine's scoring path (prefix tries, tree attention, projection of needed positions only)
gives each request exactly what transformers gives for that request alone. Tiny random models."""

from __future__ import annotations

import random

import pytest
import torch

from lmlab.engine.scoring import MIN_SHARED, _pack, score
from lmlab.errors import LmlabError

VOCAB, CTX = 97, 128
LLAMA = dict(model_type="llama", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=48, max_position_embeddings=CTX,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)
CONFIGS = {
    "llama": LLAMA,
    "mistral_window": dict(LLAMA, model_type="mistral", sliding_window=6),
    "gpt2": dict(model_type="gpt2", vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=CTX,
                 bos_token_id=None, eos_token_id=None),
}


def _reference(hf, ctx, cont, max_length=CTX):
    """lm-eval's HF computation for one request: (ctx + cont)[-(L+1):][:-1], last len(cont) logits."""
    inp = (ctx + cont)[-(max_length + 1):][:-1]
    with torch.no_grad():
        logp = hf(torch.tensor([inp])).logits[0].float().log_softmax(-1)[-len(cont):]
    tok = logp[torch.arange(len(cont)), torch.tensor(cont)]
    return float(tok.sum()), bool((logp.argmax(-1) == torch.tensor(cont)).all())


def _requests(seed=0):
    """Shared contexts with several continuations, a request that is a prefix of another,
    duplicates, one-token continuations and contexts of different lengths."""
    rng = random.Random(seed)
    seq = lambda n: [rng.randrange(VOCAB) for _ in range(n)]
    reqs = []
    for _ in range(4):
        ctx = seq(rng.randrange(3, 12))
        reqs += [(ctx, seq(rng.randrange(1, 6))) for _ in range(4)]
    base = seq(10)
    reqs += [(base[:4], base[4:7]), (base[:4], base[4:10]), (base[:6], base[6:8]), (base[:4], base[4:7])]
    reqs += [(seq(1), seq(1)), (seq(20), seq(9))]
    return reqs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_scores_equal_transformers_per_request(pair, name):
    hf, ours = pair(name)
    reqs = _requests()
    # Small rows: many tries per batch, and padding between them.
    got = score(ours, reqs, row_tokens=24, max_row_tokens=48, batch_tokens=64)
    for (ctx, cont), s in zip(reqs, got):
        ll, greedy = _reference(hf, ctx, cont)
        assert s.logprob == pytest.approx(ll, abs=1e-4)
        assert s.greedy == greedy
        assert len(s.token_logprobs) == len(cont)


def test_row_and_batch_sizes_do_not_change_scores(pair):
    _, ours = pair("llama")
    reqs = _requests(1)
    one_each = score(ours, reqs, row_tokens=1, max_row_tokens=1, batch_tokens=1)  # a forward per request
    one_trie = score(ours, reqs, row_tokens=512, max_row_tokens=512, batch_tokens=4096)
    a, b = [s.logprob for s in one_each], [s.logprob for s in one_trie]
    assert a == pytest.approx(b, abs=1e-5)


def test_too_long_requests_are_truncated_from_the_left_like_lm_eval(pair):
    hf, ours = pair("llama")
    rng = random.Random(3)
    ctx, cont = [rng.randrange(VOCAB) for _ in range(30)], [rng.randrange(VOCAB) for _ in range(5)]
    got = score(ours, [(ctx, cont)], max_length=16)[0]
    assert got.logprob == pytest.approx(_reference(hf, ctx, cont, max_length=16)[0], abs=1e-4)


def test_shared_prefixes_are_stored_once_in_the_trie():
    ctx = [5, 6, 7, 8]
    inputs = [ctx + [3, 4], ctx + [1, 2], ctx + [1], ctx]  # inputs exclude each request's last token
    order = sorted(range(4), key=lambda i: inputs[i])
    (row,) = _pack(inputs, order, 100, 100)
    assert row.tokens == [5, 6, 7, 8, 1, 2, 3, 4]  # the context once, then each branch's own tokens
    assert row.depth == [0, 1, 2, 3, 4, 5, 4, 5]  # positions restart after the shared context
    assert not row.chain  # two branches: tree attention, not plain causal


def test_a_long_shared_prefix_keeps_requests_in_one_long_row(pair):
    hf, ours = pair("llama")
    rng = random.Random(4)
    prefix = [rng.randrange(VOCAB) for _ in range(MIN_SHARED + 6)]  # a few-shot prefix, say
    reqs = [(prefix + [i] + [rng.randrange(VOCAB) for _ in range(4)], [rng.randrange(VOCAB) for _ in range(3)])
            for i in range(4)]  # each branch starts with its own token
    inputs = [(c + k)[:-1] for c, k in reqs]
    rows = _pack(inputs, sorted(range(4), key=lambda i: inputs[i]), 16, 512)
    assert len(rows) == 1 and len(rows[0].tokens) == len(prefix) + 4 * 7
    for (ctx, cont), s in zip(reqs, score(ours, reqs, row_tokens=16, max_row_tokens=512)):
        assert s.logprob == pytest.approx(_reference(hf, ctx, cont)[0], abs=1e-4)


def test_nested_requests_form_one_causal_chain():
    (row,) = _pack([[1, 2, 3], [1, 2], [1, 2, 3, 4]], [1, 0, 2], 100, 100)
    assert row.tokens == [1, 2, 3, 4] and row.chain


def test_empty_continuation_or_context_is_an_error(pair):
    _, ours = pair("llama")
    with pytest.raises(LmlabError, match="empty continuation"):
        score(ours, [([1, 2], [])])
    with pytest.raises(LmlabError, match="empty context"):
        score(ours, [([], [3])])
