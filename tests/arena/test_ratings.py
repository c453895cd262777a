"""Bradley-Terry ratings against scikit-learn's logistic regression done the Arena's way, on
simulated battles with known strengths; ties; bootstrap intervals; ranks; online Elo; style."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmlab.arena import ratings as R
from lmlab.errors import LmlabError


def simulate(strengths: dict, n: int, seed: int = 0, tie_rate: float = 0.15) -> list[dict]:
    """Battles between random pairs: a tie with tie_rate, else the BT outcome on the Arena scale."""
    rng = np.random.default_rng(seed)
    models = list(strengths)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(models), 2, replace=False)
        a, b = models[i], models[j]
        if rng.random() < tie_rate:
            w = "tie" if rng.random() < 0.7 else "tie (bothbad)"
        else:
            pa = 1 / (1 + 10 ** ((strengths[b] - strengths[a]) / 400))
            w = "model_a" if rng.random() < pa else "model_b"
        out.append({"model_a": a, "model_b": b, "winner": w})
    return out


def arena_sklearn(battles):
    """Chatbot Arena's compute_mle_elo: one row per battle, duplicated; +ln10 / -ln10 design; a
    tie is a win for a in the first copy and for b in the second; unpenalised, no intercept."""
    from sklearn.linear_model import LogisticRegression

    models = sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})
    ix = {m: i for i, m in enumerate(models)}
    rows = battles + battles
    X = np.zeros((len(rows), len(models)))
    y = np.zeros(len(rows))
    for r, b in enumerate(rows):
        X[r, ix[b["model_a"]]] = math.log(10)
        X[r, ix[b["model_b"]]] = -math.log(10)
        first_copy = r < len(battles)
        y[r] = b["winner"] == "model_a" or (b["winner"].startswith("tie") and first_copy)
    # C=inf is penalty=None (the spelling newer scikit-learn wants)
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10000).fit(X, y)
    return dict(zip(models, 400 * lr.coef_[0] + 1000))


def test_bt_equals_sklearn_logistic_regression_the_arena_way():
    battles = simulate({"a": 1200, "b": 1100, "c": 1000, "d": 950, "e": 800}, 3000, seed=1)
    ours = R.bradley_terry(battles)
    ref = arena_sklearn(battles)
    shift = np.mean(list(ref.values())) - 1000  # sklearn's solver leaves the free mean near 0
    assert abs(shift) < 1e-3
    for m in ref:
        assert ours[m] == pytest.approx(ref[m], abs=0.01)
    assert np.mean(list(ours.values())) == pytest.approx(1000, abs=1e-6)


def test_ties_count_half_a_win_for_each_side():
    # a beats b once, b beats a once, and they tie twice: equal ratings; one tie added to a's
    # single win is exactly 1.5 wins out of 2 for a: P = 0.75 -> 400 log10(3) apart.
    even = [{"model_a": "a", "model_b": "b", "winner": w} for w in ("model_a", "model_b", "tie", "tie (bothbad)")]
    r = R.bradley_terry(even)
    assert r["a"] == pytest.approx(r["b"], abs=1e-9)
    skew = [{"model_a": "a", "model_b": "b", "winner": "model_a"}, {"model_a": "b", "model_b": "a", "winner": "tie"}]
    r = R.bradley_terry(skew)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert r == pytest.approx(arena_sklearn(skew), abs=1e-3)


def test_simulated_strengths_are_recovered_within_their_intervals():
    truth = {"m0": 1150, "m1": 1080, "m2": 1000, "m3": 960, "m4": 810}
    battles = simulate(truth, 6000, seed=3, tie_rate=0.0)  # ties independent of strength would shrink the gaps
    out = R.ratings(battles, bootstrap=300, seed=0)["ratings"]
    mean_truth = np.mean(list(truth.values()))
    for m, t in truth.items():
        t = t - mean_truth + 1000  # the scale's anchor is the mean
        assert out[m]["lower"] <= t <= out[m]["upper"], (m, t, out[m])
        assert out[m]["upper"] - out[m]["lower"] < 60
    assert out["m0"]["rank"] == 1 and out["m4"]["rank"] == 5
    assert out["m2"]["rank"] <= 3


def test_ranks_come_from_non_overlapping_intervals():
    lower = {"a": 1100, "b": 1090, "c": 900}
    upper = {"a": 1150, "b": 1120, "c": 950}
    assert R.ranks(lower, upper) == {"a": 1, "b": 1, "c": 3}


def test_online_elo_depends_on_order_bt_does_not():
    battles = simulate({"a": 1100, "b": 1000, "c": 900}, 400, seed=5)
    rev = battles[::-1]
    assert R.bradley_terry(battles) == pytest.approx(R.bradley_terry(rev), abs=1e-6)
    e1, e2 = R.online_elo(battles), R.online_elo(rev)
    assert any(abs(e1[m] - e2[m]) > 1 for m in e1)


def test_style_control_removes_a_length_preference():
    # "long" is not stronger, but its answers are longer and the voters prefer longer answers.
    rng = np.random.default_rng(0)
    battles = []
    for _ in range(3000):
        a, b = ("long", "short") if rng.random() < 0.5 else ("short", "long")
        la = 1200 if a == "long" else 400
        lb = 1200 if b == "long" else 400
        la, lb = la * rng.uniform(0.5, 1.5), lb * rng.uniform(0.5, 1.5)
        p = 1 / (1 + math.exp(-2.0 * (la - lb) / (la + lb)))
        battles.append({"model_a": a, "model_b": b, "output_a": "x" * int(la), "output_b": "x" * int(lb),
                        "winner": "model_a" if rng.random() < p else "model_b"})
    plain = R.ratings(battles, bootstrap=0)["ratings"]
    sc = R.style_controlled(battles, bootstrap=20)
    assert plain["long"]["rating"] - plain["short"]["rating"] > 80
    assert abs(sc["ratings"]["long"]["rating"] - sc["ratings"]["short"]["rating"]) < 40
    assert sc["style_coefficients"]["length"] > 0.3


def test_bad_battles(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n{"model_a": "x", "winner": "tie"}\n')
    with pytest.raises(LmlabError, match=r"b.jsonl:2: a battle needs model_b"):
        R.read_battles(p)
    p.write_text('{"model_a": "x", "model_b": "y", "winner": "A"}\n')
    with pytest.raises(LmlabError, match=r"b.jsonl:1: winner 'A' is not one of model_a"):
        R.read_battles(p)
