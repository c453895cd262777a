"""Verdict parsing, the pairwise swap rule, G-Eval's expectation, reference-guided prompts, and
the grading functions end to end over a scripted backend."""

from __future__ import annotations

import math

import pytest

from lmlab.judge import grading, prompts
from lmlab.judge.backends import Backend


class Scripted(Backend):
    """A backend whose answers come from a function of the conversation (no model)."""

    def __init__(self, answer, logprobs=None):
        super().__init__(cache=None)
        self.identity, self.name = {"scripted": id(self)}, "scripted"
        self.answer, self.logprobs, self.seen = answer, logprobs, []

    def _complete(self, items, done):
        for j, it in enumerate(items):
            self.seen.append(it)
            done(j, self.answer(it["messages"][-1]["content"]))

    def _option_logprobs(self, items, done):
        for j, it in enumerate(items):
            done(j, self.logprobs(it["messages"][-1]["content"]))


@pytest.mark.parametrize("text, want", [
    ("Good answer. Rating: [[7]]", 7.0), ("[[8.5]]", 8.5), ("no verdict", None), ("[[3]] then [[9]]", None),
    ("[[7]] I repeat [[7]]", 7.0), ("[[11]]", None), ("[[0]]", None)])
def test_parse_rating(text, want):
    assert grading.parse_rating(text) == want


@pytest.mark.parametrize("text, want", [
    ("A is better. [[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie"), ("[[A]] or [[B]]", None), ("A", None)])
def test_parse_verdict(text, want):
    assert grading.parse_verdict(text) == want


@pytest.mark.parametrize("g1, g2, want", [
    ("A", "B", "A"),      # a first and wins; b first and loses: a wins
    ("B", "A", "B"),
    ("A", "A", "tie"),    # the first position won both times: inconsistent -> tie
    ("B", "B", "tie"),
    ("A", "tie", "tie"),  # a win in one order only is a tie
    ("tie", "tie", "tie"),
    ("A", None, "error"), (None, "tie", "error")])
def test_pairwise_swap_rule(g1, g2, want):
    assert grading.combine(g1, g2) == want


def test_geval_expectation_on_a_hand_made_distribution():
    p = {"1": 0.1, "5": 0.2, "7": 0.4, "10": 0.2, "3": 0.0}
    lp = {k: (math.log(v) if v else -math.inf) for k, v in p.items()}
    # renormalised over the score tokens (mass 0.9): (0.1 + 1 + 2.8 + 2) / 0.9
    assert grading.geval_expectation(lp) == pytest.approx((0.1 * 1 + 0.2 * 5 + 0.4 * 7 + 0.2 * 10) / 0.9)
    assert grading.geval_expectation({"1": -math.inf}) is None


QUESTIONS = [{"question_id": 1, "category": "writing", "question": "Write a haiku.", "reference": None},
             {"question_id": 2, "category": "math", "question": "What is 2+2?", "reference": "4"}]


def test_pairwise_judges_both_orders_in_one_batch_and_follows_the_rule():
    # A judge that always prefers the answer containing "good", wherever it is shown.
    def judge(text):
        a = text.split("[The Start of Assistant A's Answer]")[1].split("[The End")[0]
        return "[[A]]" if "good" in a else "[[B]]"
    b = Scripted(judge)
    answers = {"x": {1: "a good haiku", 2: "4, good"}, "y": {1: "meh", 2: "5"}}
    rows = grading.pairwise(b, QUESTIONS, answers, "x", "y")
    assert [r["winner"] for r in rows] == ["model_a", "model_a"]
    assert len(b.seen) == 4 and b.seen[0]["choice"] == grading.PAIR_CHOICES
    # math uses the reference-guided prompt with MT-Bench's reference
    assert "[The Start of Reference Answer]\n4\n" in b.seen[2]["messages"][-1]["content"]
    assert "Reference" not in b.seen[0]["messages"][-1]["content"]
    # a judge that always says A (pure position bias) yields ties only
    rows = grading.pairwise(Scripted(lambda t: "[[A]]"), QUESTIONS, answers, "x", "y")
    assert [r["winner"] for r in rows] == ["tie", "tie"]


def test_single_grading_counts_parse_failures_and_never_defaults():
    b = Scripted(lambda t: "Rating: [[6]]" if "haiku" in t else "I think it is fine.")
    rows = grading.single(b, QUESTIONS, {1: "leaves fall", 2: "4"}, references={2: "4"})
    assert rows[0]["score"] == 6.0 and rows[1]["score"] is None
    assert grading.failures(rows) == 1
    assert b.seen[0]["regex"] == grading.RATING_REGEX
    assert prompts.single("q", "a", "ref")[1]["content"].count("Reference Answer") == 2


def test_geval_over_a_backend():
    b = Scripted(None, logprobs=lambda t: {str(s): (math.log(0.5) if s in (4, 8) else -math.inf)
                                           for s in range(1, 11)})
    rows = grading.geval(b, QUESTIONS, {1: "a", 2: "b"})
    assert [r["score"] for r in rows] == [6.0, 6.0]
