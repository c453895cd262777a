"""Questions, reference answers and model answers, read from the shapes they are published in.

Questions: MT-Bench's question.jsonl (`question_id`, `category`, `turns`, optional `reference`).
References: FastChat's reference_answer/<model>.jsonl (`question_id`, `choices[0].turns`).
Answers, one row per (model, question), any of:
  FastChat model_answer: `question_id`, `model_id`, `choices[0].turns`
  AlpacaEval model_outputs: `instruction`, `output`, `generator`
  plain: `question_id`, `model`, `answer`
Every bad row is reported as file:line with the fields it lacks.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.records import iter_jsonl


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) pairs of a JSONL file (lmlab.records' errors: file:line)."""
    return list(iter_jsonl(path))


def load_questions(path: str | Path) -> list[dict]:
    """[{question_id, category, question (first turn), turns, reference (first turn or None)}]."""
    out = []
    for n, row in read_jsonl(path):
        turns = row.get("turns")
        if "question_id" not in row or not isinstance(turns, list) or not turns:
            missing = [k for k in ("question_id", "turns") if k not in row] or ["turns (a non-empty list)"]
            raise LmlabError(f"{path}:{n}: a question needs {', '.join(missing)}")
        ref = row.get("reference")
        out.append({"question_id": row["question_id"], "category": row.get("category", "general"),
                    "question": turns[0], "turns": turns, "reference": ref[0] if ref else None})
    return out


def load_references(path: str | Path) -> dict:
    """question_id -> first-turn reference answer."""
    out = {}
    for n, row in read_jsonl(path):
        try:
            out[row["question_id"]] = row["choices"][0]["turns"][0]
        except (KeyError, IndexError, TypeError):
            raise LmlabError(f"{path}:{n}: a reference needs question_id and choices[0].turns") from None
    return out


def _answer(row: dict):
    """(model, question key, answer text) or the fields the row lacks."""
    if "choices" in row:
        try:
            text = row["choices"][0]["turns"][0]
        except (IndexError, KeyError, TypeError):
            return "choices[0].turns"
        need = {"question_id": row.get("question_id"), "model_id": row.get("model_id")}
        missing = [k for k, v in need.items() if v is None]
        return ", ".join(missing) if missing else (row["model_id"], row["question_id"], text)
    if "instruction" in row or "output" in row or "generator" in row:
        missing = [k for k in ("instruction", "output", "generator") if not isinstance(row.get(k), str)]
        return ", ".join(missing) if missing else (row["generator"], row["instruction"], row["output"])
    missing = [k for k in ("question_id", "model", "answer") if k not in row]
    return ", ".join(missing) if missing else (row["model"], row["question_id"], row["answer"])


def load_answers(*paths: str | Path) -> dict[str, dict]:
    """model -> {question_id (or instruction text) -> first-turn answer}, over several files."""
    out: dict[str, dict] = {}
    for path in paths:
        for n, row in read_jsonl(path):
            got = _answer(row)
            if isinstance(got, str):
                raise LmlabError(f"{path}:{n}: an answer needs {got} (FastChat: question_id, model_id, "
                                 f"choices[0].turns; AlpacaEval: instruction, output, generator; "
                                 f"or question_id, model, answer)")
            model, key, text = got
            out.setdefault(model, {})[key] = text
    return out


def write_answers(path: str | Path, model: str, answers: dict) -> None:
    """FastChat's model_answer shape, first turn only."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, text in answers.items():
            f.write(json.dumps({"question_id": qid, "model_id": model, "choices": [{"index": 0, "turns": [text]}]},
                               ensure_ascii=False) + "\n")


def generate_answers(lm, questions: list[dict], system: str | None = None, max_tokens: int = 512,
                     temperature: float = 0.0) -> dict:
    """First-turn answers of a model, batched through its engine: question_id -> text."""
    from lmlab.engine.params import SamplingParams

    prompts = [lm.prompt_ids(q["question"], system=system) for q in questions]
    outs = lm.engine.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=0),
                              progress=True)
    return {q["question_id"]: o.outputs[0].text.strip() for q, o in zip(questions, outs)}
