"""AlpaGasus-style data filtering (Chen et al., 2024): a judge rates each (instruction, input,
response) for accuracy on a 0-5 scale, and only examples at or above a threshold (4.5 in the
paper) are kept; near-duplicates are then removed with the data stage's MinHash step.

The rating is the first line of the judge's answer. With a judge that decodes under constraints
it is exactly a score ("4.5"); otherwise the first number in [0, 5] is taken and answers
without one are counted as unparsed, never given a default score.
"""

from __future__ import annotations

import re

RATING_PROMPT = (
    "We would like to request your feedback on the performance of AI assistant in response to the "
    "instruction and the given input displayed following.\n\nInstruction: {instruction}\nInput: {input}\n"
    "Response: {output}\n\nPlease rate according to the accuracy of the response to the instruction and the "
    "input. Each assistant receives a score on a scale of 0 to 5, where a higher score indicates higher level "
    "of the accuracy. Please first output a single line containing value indicating the scores. In the "
    "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias.")
SCORES = [f"{x / 2:g}" for x in range(11)]  # "0", "0.5", ..., "5": the constrained variant (guided_choice)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)")


def parse_score(text: str) -> float | None:
    first = text.strip().split("\n", 1)[0] if text.strip() else ""
    for m in _NUMBER.finditer(first):
        v = float(m.group(1))
        if 0 <= v <= 5:
            return v
    return None


def rate(judge, records: list[dict]) -> list[float | None]:
    """Each record's rating by `judge` (a judge backend)."""
    constrained = getattr(judge, "guided", False)
    conv = [[{"role": "user", "content": RATING_PROMPT.format(instruction=r["instruction"], input=r.get("input", ""),
                                                              output=r["output"])}] for r in records]
    answers = judge.complete(conv, max_tokens=4 if constrained else 64, temperature=0.0,
                             choice=SCORES if constrained else None)
    return [parse_score(a) for a in answers]


def select(records: list[dict], scores: list[float | None], threshold: float = 4.5) -> tuple[list[dict], dict]:
    kept, summary = [], {"rated": len(records), "unparsed": 0, "below threshold": 0}
    for r, s in zip(records, scores):
        if s is None:
            summary["unparsed"] += 1
        elif s < threshold:
            summary["below threshold"] += 1
        else:
            kept.append({**r, "score": s})
    summary["kept"] = len(kept)
    return kept, summary


def keep_rate_by(records: list[dict], scores: list[float | None], threshold: float, field: str) -> dict[str, float]:
    """The share kept per value of `field` (e.g. the model that wrote the answer)."""
    groups: dict[str, list[bool]] = {}
    for r, s in zip(records, scores):
        groups.setdefault(str(r.get(field)), []).append(s is not None and s >= threshold)
    return {g: sum(v) / len(v) for g, v in sorted(groups.items())}
