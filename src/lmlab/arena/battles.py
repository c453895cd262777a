"""Battles in Chatbot Arena's shape (`model_a`, `model_b`, `winner` one of model_a / model_b /
tie / tie (bothbad)), made by a judge over a prompt set and several models or checkpoints.

Every pair of models meets on every question they both answered; the judge sees each pair in
both orders (grading.judge_pairs), and the question's two orders are one battle. Which model is
model_a alternates across questions, so neither side is always first in the file either.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.judge.grading import judge_pairs


def check_models(models: list[str], answers: dict[str, dict], where: str = "the answer files") -> None:
    have = sorted(answers)
    for m in models:
        if m not in answers:
            raise LmlabError(f"model {m!r} has no answers in {where} (models with answers: {', '.join(have)})")
    if len(set(models)) < 2:
        raise LmlabError("a battle needs at least two different models")


def judge_battles(backend, questions: list[dict], answers: dict[str, dict], models: list[str] | None = None,
                  references: dict | None = None, max_tokens: int = 512) -> list[dict]:
    from lmlab.judge.grading import _reference

    models = models or sorted(answers)
    check_models(models, answers)
    pairs = []
    for k, (q, (m1, m2)) in enumerate(itertools.product(questions, itertools.combinations(models, 2))):
        qid = q["question_id"]
        if qid not in answers[m1] or qid not in answers[m2]:
            continue
        a, b = (m1, m2) if k % 2 == 0 else (m2, m1)
        pairs.append({"question_id": qid, "category": q.get("category"), "question": q["question"],
                      "reference": _reference(q, references), "model_a": a, "model_b": b,
                      "answer_a": answers[a][qid], "answer_b": answers[b][qid]})
    if not pairs:
        raise LmlabError("no question was answered by two of the models")
    return judge_pairs(backend, pairs, max_tokens=max_tokens)


def write_battles(rows: list[dict], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
