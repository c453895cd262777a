"""Raw and length-controlled win rates: AlpacaEval's definitions, the GLM against a direct fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.errors import LmlabError
from lmlab.judge import winrate


def annotations(n=300, seed=0):
    """Model answers longer on some items; the judge likes length and the model a bit."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        l1, l2 = int(rng.integers(100, 1500)), int(rng.integers(100, 3000))
        p = 1 / (1 + np.exp(-(0.2 + 1.2 * np.tanh((l2 - l1) / 900))))
        pref = 2.0 if rng.random() < p else 1.0
        if i % 17 == 0:
            pref = 1.5 if i % 2 else 0  # draws, in both of AlpacaEval's spellings
        rows.append({"instruction": f"q{i}", "output_1": "b" * l1, "output_2": "m" * l2,
                     "generator_1": "base", "generator_2": "model", "preference": pref})
    rows.append(dict(rows[0], preference=None))  # not annotated: left out
    return rows


def test_raw_win_rate_and_standard_error_as_alpaca_eval():
    rows = annotations()
    out = winrate.win_rates(rows)
    y = np.array([(1.5 if r["preference"] == 0 else r["preference"]) - 1 for r in rows if r["preference"] is not None])
    assert out["n_total"] == len(y) == 300
    assert out["win_rate"] == pytest.approx(100 * y.mean())
    assert out["standard_error"] == pytest.approx(100 * y.std(ddof=1) / np.sqrt(len(y)))


def test_length_controlled_win_rate_equals_a_direct_glm_fit():
    from sklearn.linear_model import LogisticRegression

    rows = annotations()
    out = winrate.win_rates(rows)
    kept = [r for r in rows if r["preference"] is not None]
    y = np.array([(1.5 if r["preference"] == 0 else r["preference"]) - 1 for r in kept])
    d = np.array([len(r["output_1"]) - len(r["output_2"]) for r in kept], float)
    x = np.tanh(d / d.std(ddof=1))
    # AlpacaEval's soft-label trick: each row twice, labels 1 and 0, weighted by p and 1 - p
    X = np.concatenate([np.stack([np.ones_like(x), x], 1)] * 2)
    Y = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    w = np.concatenate([y, 1 - y])
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-12, max_iter=10000).fit(X, Y, sample_weight=w)
    theta = lr.coef_[0][0]
    assert out["length_controlled_winrate"] == pytest.approx(100 / (1 + np.exp(-theta)), abs=1e-4)
    assert lr.coef_[0][1] < 0  # longer model answers (negative delta) are preferred
    # the length term explains part of the raw win rate
    assert out["length_controlled_winrate"] < out["win_rate"]


def test_reads_alpaca_eval_json_and_our_verdicts(tmp_path):
    p = tmp_path / "annotations.json"
    p.write_text(json.dumps(annotations(50)))
    assert winrate.win_rates(winrate.read_annotations(p))["n_total"] == 50
    v = tmp_path / "verdicts.jsonl"
    rows = [{"model_a": "m", "model_b": "base", "winner": "model_a", "output_a": "long" * 9, "output_b": "s"},
            {"model_a": "base", "model_b": "m", "winner": "tie", "output_a": "x", "output_b": "y"},
            {"model_a": "base", "model_b": "m", "winner": "error", "output_a": "x", "output_b": "y"},
            {"model_a": "base", "model_b": "m", "winner": "model_a", "output_a": "x", "output_b": "y"}]
    v.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ann = winrate.read_annotations(v, baseline="base")
    assert [a["preference"] for a in ann] == [2.0, 1.5, 1.0]
    assert winrate.win_rates(ann)["win_rate"] == pytest.approx(50.0)
    p.write_text(json.dumps([{"output_1": "a", "generator_1": "b"}]))
    with pytest.raises(LmlabError, match="item 0: an annotation needs output_2, generator_2, preference"):
        winrate.read_annotations(p)
    v.write_text('{"model_a": "a", "model_b": "b", "winner": "tie"}\n')
    with pytest.raises(LmlabError, match=r"verdicts.jsonl:1: a verdict needs output_a, output_b"):
        winrate.read_annotations(v)
