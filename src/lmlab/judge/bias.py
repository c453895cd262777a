"""Bias report for a judge on an answer set, each figure with a bootstrap 95% CI.

From pairwise rows (grading.judge_pairs: g1 in (a, b) order, g2 in (b, a) order):
  position_consistency: share of pairs whose verdict is unchanged when the order is swapped
  first_position_win_rate: share of single-order judgments that pick the answer shown first
  longer_win_rate: among decisive single-order judgments, share won by the longer answer
  length_slope: logistic slope of "first shown wins" on tanh(standardised length difference)
From a verbosity attack (verbosity_pairs): attack_success_rate, the share of pairs in which the
answer padded with a restated list beats the same answer unpadded (a fair judge says tie).
Self-preference: the judge's win rate for its own model's answers minus another judge's (or
people's) on the same pairs.
"""

from __future__ import annotations

import re

import numpy as np

from lmlab.judge.grading import judge_pairs


def bootstrap_ci(values, stat=np.mean, rounds: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, lower, upper): percentile bootstrap 95% interval over items."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(rounds, len(x)))
    stats = x[idx].mean(1) if stat is np.mean else np.array([stat(x[i]) for i in idx])
    return float(stat(x)), float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _figure(values, rounds):
    est, lo, hi = bootstrap_ci(values, rounds=rounds)
    return {"value": est, "lower": lo, "upper": hi, "n": len(values)}


def _judgments(rows):
    """Single-order judgments as (verdict for the first shown, len first, len second)."""
    for r in rows:
        la, lb = len(r["output_a"]), len(r["output_b"])
        if r.get("g1") is not None:
            yield r["g1"], la, lb
        if r.get("g2") is not None:
            yield r["g2"], lb, la


def position_report(rows: list[dict], rounds: int = 1000) -> dict:
    both = [r for r in rows if r.get("g1") is not None and r.get("g2") is not None]
    swap = {"A": "B", "B": "A", "tie": "tie"}
    consistent = [float(r["g1"] == swap[r["g2"]]) for r in both]
    js = list(_judgments(rows))
    first = [float(v == "A") for v, _, _ in js]
    decisive = [(v, la, lb) for v, la, lb in js if v != "tie" and la != lb]
    longer = [float((v == "A") == (la > lb)) for v, la, lb in decisive]
    return {"position_consistency": _figure(consistent, rounds),
            "first_position_win_rate": _figure(first, rounds),
            "longer_win_rate": _figure(longer, rounds),
            "length_slope": _length_slope(js, rounds),
            "parse_failures": sum((r.get("g1") is None) + (r.get("g2") is None) for r in rows),
            "judgments": 2 * len(rows)}


def _length_slope(js, rounds):
    """Slope of logit P(first shown wins | decisive) on tanh(standardised length difference)."""
    d = [(float(v == "A"), la - lb) for v, la, lb in js if v != "tie"]
    if len(d) < 4:
        return {"value": float("nan"), "lower": float("nan"), "upper": float("nan"), "n": len(d)}
    y = np.array([a for a, _ in d])
    dl = np.array([b for _, b in d], dtype=float)
    x = np.tanh(dl / (dl.std() or 1.0))

    def slope(ix):
        return _logit_fit(x[ix], y[ix])[1]
    rng = np.random.default_rng(0)
    boots = [slope(rng.integers(0, len(y), len(y))) for _ in range(min(rounds, 300))]
    return {"value": float(slope(np.arange(len(y)))), "lower": float(np.percentile(boots, 2.5)),
            "upper": float(np.percentile(boots, 97.5)), "n": len(y)}


def _logit_fit(x, y, iters: int = 50, ridge: float = 1e-6):
    """(intercept, slope) of a logistic regression by Newton's method (a tiny ridge keeps a
    separable bootstrap sample finite)."""
    X = np.stack([np.ones_like(x), x], 1)
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (y - p) - ridge * w
        H = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(H, g)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return w


def pad_with_restated_list(answer: str) -> str:
    """The verbosity attack (MT-Bench paper, "repetitive list"): the answer, then its own points
    restated as a list, adding length and no content."""
    points = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", answer) if len(s.strip()) > 3]
    restated = "\n".join(f"- In other words: {p}" for p in points) or f"- In other words: {answer.strip()}"
    return f"{answer.rstrip()}\n\nTo restate the key points:\n{restated}"


def verbosity_attack(backend, items: list[dict], rounds: int = 1000, max_tokens: int = 512) -> dict:
    """items: [{question, answer, model?}]. Judges each answer against its padded copy in both
    orders; success = the padded copy wins under the swap rule."""
    pairs = [{"question": it["question"], "answer_a": pad_with_restated_list(it["answer"]),
              "answer_b": it["answer"], "model_a": "padded", "model_b": "original",
              "question_id": it.get("question_id")} for it in items]
    rows = judge_pairs(backend, pairs, max_tokens=max_tokens)
    ok = [r for r in rows if r["winner"] != "error"]
    return {"attack_success_rate": _figure([float(r["winner"] == "model_a") for r in ok], rounds),
            "parse_failures": len(rows) - len(ok)}


def self_preference(rows: list[dict], self_model: str, reference_rows: list[dict] | None = None,
                    rounds: int = 1000) -> dict:
    """The judge's win rate (ties half) for `self_model` in its battles; with reference_rows (the
    same pairs judged by someone else, matched on question_id and models) the difference, a
    paired bootstrap over pairs."""
    def score(r):
        if r["winner"] in ("tie", "tie (bothbad)"):
            return 0.5
        return float(r[r["winner"]] == self_model)

    def key(r):
        return (r.get("question_id"), frozenset((r["model_a"], r["model_b"])))
    mine = {key(r): score(r) for r in rows if r["winner"] != "error" and self_model in (r["model_a"], r["model_b"])}
    out = {"self_win_rate": _figure(list(mine.values()), rounds)}
    if reference_rows is not None:
        ref = {key(r): score(r) for r in reference_rows if r["winner"] != "error"}
        diffs = [mine[k] - ref[k] for k in mine if k in ref]
        out["self_preference"] = _figure(diffs, rounds)
    return out
