"""Bias report on hand-made verdicts and scripted judges: a judge that always picks the first
position, one that always picks the longer answer, and a fair one."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.judge import bias
from lmlab.judge.backends import Backend


class Scripted(Backend):
    def __init__(self, answer):
        super().__init__(cache=None)
        self.identity, self.name, self.answer = {"s": id(self)}, "scripted", answer

    def _complete(self, items, done):
        for j, it in enumerate(items):
            done(j, self.answer(it["messages"][-1]["content"]))


def answers_of(text):
    a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
    b = text.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
    return a, b


def row(g1, g2, la=10, lb=10, winner=None):
    return {"g1": g1, "g2": g2, "output_a": "a" * la, "output_b": "b" * lb, "model_a": "x", "model_b": "y",
            "winner": winner or "tie"}


def test_position_report_on_hand_made_verdicts():
    rows = [row("A", "A")] * 6 + [row("A", "B")] * 2 + [row("B", "A")] * 2 + [row(None, "A")]
    rep = bias.position_report(rows, rounds=200)
    assert rep["position_consistency"]["value"] == pytest.approx(4 / 10)
    # judgments: 6*2 + 2*2 + 2*2 + 1 = 21, of which "A" (first shown): 12 + 2 + 2 + 1 = 17
    assert rep["first_position_win_rate"]["value"] == pytest.approx(17 / 21)
    assert rep["parse_failures"] == 1
    ci = rep["position_consistency"]
    assert ci["lower"] <= ci["value"] <= ci["upper"] and ci["upper"] - ci["lower"] > 0.1


def test_length_bias_of_a_judge_that_prefers_longer_answers():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(60):
        la, lb = rng.integers(5, 500, 2)
        first_longer = "A" if la > lb else "B"
        second = "B" if la > lb else "A"  # in (b, a) order the longer one is a, shown second
        rows.append(row(first_longer, second, la, lb))
    rep = bias.position_report(rows, rounds=200)
    assert rep["longer_win_rate"]["value"] == 1.0
    assert rep["length_slope"]["value"] > 2 and rep["length_slope"]["lower"] > 0
    assert rep["position_consistency"]["value"] == 1.0


def test_verbosity_attack_succeeds_on_a_length_loving_judge_only():
    items = [{"question": f"q{i}", "answer": f"Point one {i}. Point two. Point three."} for i in range(8)]
    longer = Scripted(lambda t: "[[A]]" if len(answers_of(t)[0]) > len(answers_of(t)[1]) else "[[B]]")
    fair = Scripted(lambda t: "[[C]]")
    assert bias.verbosity_attack(longer, items, rounds=100)["attack_success_rate"]["value"] == 1.0
    assert bias.verbosity_attack(fair, items, rounds=100)["attack_success_rate"]["value"] == 0.0
    padded = bias.pad_with_restated_list("Point one. Point two.")
    assert padded.startswith("Point one. Point two.") and padded.count("- In other words:") == 2


def test_self_preference_against_a_reference_judge():
    mine = [{"question_id": i, "model_a": "me", "model_b": "other", "winner": "model_a"} for i in range(10)]
    ref = [{"question_id": i, "model_a": "other", "model_b": "me", "winner": "model_a" if i < 5 else "tie"}
           for i in range(10)]
    out = bias.self_preference(mine, "me", ref, rounds=200)
    assert out["self_win_rate"]["value"] == 1.0
    # reference: me loses 5 and ties 5 -> 0.25; the judge's own view is 0.75 higher
    assert out["self_preference"]["value"] == pytest.approx(0.75)


def test_bootstrap_ci_covers_the_mean():
    est, lo, hi = bias.bootstrap_ci([0, 1] * 50, rounds=500)
    assert est == 0.5 and lo < 0.5 < hi and hi - lo == pytest.approx(0.2, abs=0.05)
