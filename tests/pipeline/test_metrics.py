"""The report's intervals, checked against reference implementations."""

from __future__ import annotations

import math

import pytest


def test_wilson_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from lmlab.pipeline.metrics import wilson

    for k, n in ((0, 5), (3, 10), (10, 10), (37, 50)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n) == pytest.approx([ci.low, ci.high], abs=1e-9)


def test_perplexity_bootstrap_brackets_the_corpus_perplexity():
    import random

    from lmlab.pipeline.metrics import bootstrap_perplexity

    rng = random.Random(0)
    tokens = [rng.randint(20, 200) for _ in range(30)]
    loglik = [-t * rng.uniform(2.0, 3.0) for t in tokens]
    ppl = math.exp(-sum(loglik) / sum(tokens))
    lo, hi = bootstrap_perplexity(loglik, tokens, resamples=2000)
    assert lo < ppl < hi and math.exp(2.0) < lo and hi < math.exp(3.0)
    assert bootstrap_perplexity(loglik[:1], tokens[:1]) is None  # one document: no interval
