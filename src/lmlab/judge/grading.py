"""Grading modes: MT-Bench single-answer 1-10 grading (reference-guided for math, reasoning and
coding), pairwise comparison judged in both orders, and G-Eval's probability-weighted score.

Verdicts are parsed strictly: a judgment with no verdict, or with two different ones, is a parse
failure, counted and kept as None / "error", never turned into a default verdict. When the
backend decodes under a constraint (backend.guided), the text is the verdict itself
("[[A]]", "[[7]]") and goes through the same parser.

Pairwise rule (MT-Bench): the pair is judged as (a, b) and as (b, a); a model wins only when both
orders name it, any disagreement (a win and a tie, or two opposite wins) is a tie.
"""

from __future__ import annotations

import math
import re

from lmlab.judge import prompts

RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
VERDICT = re.compile(r"\[\[([ABC])\]\]")
PAIR_CHOICES = ["[[A]]", "[[B]]", "[[C]]"]  # the constrained variant: guided_choice
RATING_REGEX = r"\[\[(10|[1-9])\]\]"  # the constrained variant: guided_regex


def parse_rating(text: str) -> float | None:
    """The [[rating]] of a judgment, or None when it has none, several different, or one outside 1-10."""
    found = {float(m) for m in RATING.findall(text)}
    if len(found) != 1:
        return None
    (r,) = found
    return r if 1 <= r <= 10 else None


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "tie" from [[A]] / [[B]] / [[C]]; None when absent or contradictory."""
    found = set(VERDICT.findall(text))
    if len(found) != 1:
        return None
    (v,) = found
    return "tie" if v == "C" else v


def combine(first: str | None, second: str | None) -> str:
    """The pair's verdict from the (a, b) judgment and the (b, a) judgment (each "A" / "B" / "tie"
    in its own order): "A" (a wins), "B" (b wins), "tie", or "error" when either did not parse."""
    if first is None or second is None:
        return "error"
    second = {"A": "B", "B": "A", "tie": "tie"}[second]  # back to (a, b) order
    return first if first == second else "tie"


def _reference(q: dict, references: dict | None) -> str | None:
    if q.get("category") not in prompts.NEED_REF_CATS:
        return None
    return (references or {}).get(q["question_id"]) or q.get("reference")


def single(backend, questions: list[dict], answers: dict, references: dict | None = None,
           max_tokens: int = 512) -> list[dict]:
    """Grade each question's answer 1-10: [{question_id, score (None = parse failure), judgment}]."""
    qs = [q for q in questions if q["question_id"] in answers]
    convs = [prompts.single(q["question"], answers[q["question_id"]], _reference(q, references)) for q in qs]
    texts = backend.complete(convs, max_tokens=max_tokens, temperature=0.0, regex=RATING_REGEX)
    return [{"question_id": q["question_id"], "category": q.get("category"), "score": parse_rating(t),
             "judgment": t} for q, t in zip(qs, texts)]


def pairwise(backend, questions: list[dict], answers: dict[str, dict], model_a: str, model_b: str,
             references: dict | None = None, max_tokens: int = 512) -> list[dict]:
    """Judge model_a against model_b on every question both answered, in both orders, in one batch.
    Rows are battles in Chatbot Arena's shape plus the evidence: winner is model_a / model_b /
    tie / error; g1, g2 are the two judgments' verdicts, each in its own order."""
    pairs = [(q, answers[model_a][q["question_id"]], answers[model_b][q["question_id"]]) for q in questions
             if q["question_id"] in answers[model_a] and q["question_id"] in answers[model_b]]
    return judge_pairs(backend, [{"question_id": q["question_id"], "category": q.get("category"),
                                  "question": q["question"], "reference": _reference(q, references),
                                  "model_a": model_a, "model_b": model_b, "answer_a": a, "answer_b": b}
                                 for q, a, b in pairs], max_tokens=max_tokens)


def judge_pairs(backend, pairs: list[dict], max_tokens: int = 512) -> list[dict]:
    """pairs: [{question, answer_a, answer_b, model_a, model_b, reference?, question_id?}]."""
    convs = []
    for p in pairs:
        convs.append(prompts.pairwise(p["question"], p["answer_a"], p["answer_b"], p.get("reference")))
        convs.append(prompts.pairwise(p["question"], p["answer_b"], p["answer_a"], p.get("reference")))
    texts = backend.complete(convs, max_tokens=max_tokens, temperature=0.0, choice=PAIR_CHOICES)
    rows = []
    for i, p in enumerate(pairs):
        t1, t2 = texts[2 * i], texts[2 * i + 1]
        g1, g2 = parse_verdict(t1), parse_verdict(t2)
        v = combine(g1, g2)
        rows.append({"question_id": p.get("question_id"), "category": p.get("category"),
                     "model_a": p["model_a"], "model_b": p["model_b"],
                     "winner": {"A": "model_a", "B": "model_b"}.get(v, v), "g1": g1, "g2": g2,
                     "judge": getattr(backend, "name", None), "instruction": p["question"],
                     "output_a": p["answer_a"], "output_b": p["answer_b"],
                     "judgment_1": t1, "judgment_2": t2})
    return rows


def geval_expectation(logprobs: dict[str, float]) -> float | None:
    """G-Eval's score: sum over score tokens of p(score) * score, p renormalised over the score
    tokens (keys are the scores as text). None when the judge put no mass on any of them."""
    finite = {int(k): v for k, v in logprobs.items() if v is not None and v > -math.inf}
    if not finite:
        return None
    top = max(finite.values())
    w = {s: math.exp(v - top) for s, v in finite.items()}
    return sum(s * p for s, p in w.items()) / sum(w.values())


def geval(backend, questions: list[dict], answers: dict, scale: int = 10) -> list[dict]:
    """[{question_id, score (expectation, None if no mass on the scores), probs}]. Exact from a
    local model; from an endpoint, from its first token's top_logprobs."""
    qs = [q for q in questions if q["question_id"] in answers]
    options = [str(s) for s in range(1, scale + 1)]
    lps = backend.option_logprobs([prompts.geval(q["question"], answers[q["question_id"]], scale) for q in qs],
                                  options)
    rows = []
    for q, lp in zip(qs, lps):
        total = sum(math.exp(v) for v in lp.values() if v > -math.inf)
        rows.append({"question_id": q["question_id"], "score": geval_expectation(lp),
                     "mass": total, "probs": {k: math.exp(v) / total if total else 0.0 for k, v in lp.items()}})
    return rows


def failures(rows: list[dict]) -> int:
    """Parse failures in single (score None) or pairwise (winner "error") rows."""
    return sum(1 for r in rows if r.get("score", 0) is None or r.get("winner") == "error")
