"""Metrics with 95% confidence intervals, in one shape for the report: {"value", "ci": [lo, hi], "n"}.

A rate over items (accuracy, exact match) has Wilson's score interval; a mean of real scores
the normal interval mean +- 1.96 standard errors (lm-eval's standard error); a corpus metric
(perplexity) a percentile bootstrap over documents, each resample's perplexity weighted by
tokens as the metric itself is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

Z95 = 1.959963984540054


def from_mean(value: float, stderr: float | None, n: int) -> dict:
    ci = [value - Z95 * stderr, value + Z95 * stderr] if stderr is not None else None
    return {"value": value, "ci": ci, "n": n}


def bootstrap_perplexity(loglik: list[float], tokens: list[int], resamples: int = 1000, seed: int = 0) -> list[float]:
    import numpy as np

    ll, tok = np.asarray(loglik, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    if len(ll) < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, len(ll), size=(resamples, len(ll)))
    ppl = np.exp(-ll[idx].sum(1) / np.maximum(tok[idx].sum(1), 1))
    return [float(np.percentile(ppl, 2.5)), float(np.percentile(ppl, 97.5))]


def perplexity(lm, path: str, limit: int, folder: Path, max_length: int = 512, resamples: int = 1000) -> dict:
    """Token perplexity of the first `limit` documents of a JSONL ("text") file, lmlab.eval's
    rolling windows, with a bootstrap interval."""
    from lmlab.eval.runner import evaluate
    from lmlab.eval.tasks import Task

    task = Task("perplexity", "perplexity", metrics=["token_perplexity"])
    report = evaluate(lm, task, data=path, limit=limit, max_length=max_length, output_dir=folder, progress=True)
    rows = [json.loads(l) for l in (Path(folder) / "samples_perplexity.jsonl").read_text().splitlines() if l.strip()]
    value = report["results"]["perplexity"]["token_perplexity"]
    ci = bootstrap_perplexity([r["loglikelihood"] for r in rows], [r["tokens"] for r in rows], resamples)
    return {"value": value, "ci": ci, "n": len(rows), "tokens": sum(r["tokens"] for r in rows)}


def wilson(k: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson's score interval for k successes in n: unlike mean +- 1.96 se it stays inside
    [0, 1] and is not [0, 0] when nothing (or everything) succeeded on a small slice."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def proportion(successes: list[bool]) -> dict:
    n, k = len(successes), sum(successes)
    return {"value": k / n if n else float("nan"), "ci": wilson(k, n), "n": n}


def rate(value: float, n: int) -> dict:
    """A 0/1 metric's mean over n items (accuracy, exact match) with its Wilson interval."""
    return {"value": value, "ci": wilson(round(value * n), n), "n": n}
