"""Rolling windows are lm-eval's (every token predicted exactly once, windows filled with
earlier context), and the corpus metrics weight texts by their size."""

from __future__ import annotations

import math

import pytest

from lmlab.eval.perplexity import corpus_metrics, rolling_windows


@pytest.mark.parametrize("n, max_length", [(1, 4), (4, 4), (5, 4), (9, 4), (23, 8), (100, 7)])
def test_rolling_windows_equal_lm_eval(n, max_length):
    utils = pytest.importorskip("lm_eval.utils")
    tokens = list(range(10, 10 + n))
    want = [utils.make_disjoint_window(w) for w in
            utils.get_rolling_token_windows(tokens, prefix_token=0, max_seq_len=max_length, context_len=1)]
    assert rolling_windows(tokens, 0, max_length) == [(list(a), list(b)) for a, b in want]


def test_every_token_is_predicted_once_with_at_most_max_length_inputs():
    tokens = list(range(50))
    windows = rolling_windows(tokens, -1, 8)
    assert [t for _, cont in windows for t in cont] == tokens
    assert all(len(ctx) + len(cont) - 1 <= 8 for ctx, cont in windows)
    assert windows[0][0] == [-1]  # the first token is conditioned on the prefix (BOS) token


def test_corpus_metrics_are_weighted_by_size():
    samples = [{"loglikelihood": -10.0, "tokens": 5, "words": 4, "bytes": 20},
               {"loglikelihood": -30.0, "tokens": 15, "words": 8, "bytes": 60}]
    m = corpus_metrics(samples)
    assert m["token_perplexity"] == pytest.approx(math.exp(40 / 20))
    assert m["word_perplexity"] == pytest.approx(math.exp(40 / 12))
    assert m["byte_perplexity"] == pytest.approx(math.exp(40 / 80))
    assert m["bits_per_byte"] == pytest.approx(40 / 80 / math.log(2))
