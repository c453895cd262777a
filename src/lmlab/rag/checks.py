"""Checks on a cited answer: ALCE citation recall and precision (Gao et al. 2023, "Enabling Large
Language Models to Generate Text with Citations") and RAGAS-style faithfulness (Es et al. 2023).

Both rest on one question, "do these passages support this statement?", asked of an `entails`
function (premise, statement) -> bool. `judge_entails(judge)` makes one from any chat judge: a
callable messages -> reply text, or a judge backend of lmlab.judge (`.complete(conversations,
...)`); `lexical_entails` is a cheap deterministic stand-in (content-word coverage).

- statements: the answer split into sentences; a citation mark right after a sentence's full stop
  belongs to that sentence.
- citation recall (ALCE): the share of statements whose cited passages, together, support it
  (a statement with no citation scores 0).
- citation precision (ALCE): the share of citations that are not irrelevant; a citation is
  irrelevant when it alone does not support its statement and removing it leaves the statement
  as supported as before.
- faithfulness (RAGAS): the share of statements supported by their cited passages (by all the
  given passages where a statement cites none); 1 - faithfulness is the unsupported-statement rate.
"""

from __future__ import annotations

import re
from typing import Callable

from lmlab.rag.answer import ABSTAIN, parse_citations

Entails = Callable[[str, str], bool]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MARKS = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_MARKS_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)")
JUDGE_PROMPT = ("Passages:\n{premise}\n\nStatement: {statement}\n\nIs the statement fully supported by the "
                "passages? Answer with one word, yes or no.")


def split_statements(answer: str) -> list[tuple[str, list[int]]]:
    """(statement without its citation marks, citation numbers) for each sentence of the answer."""
    out = []
    answer = _MARKS_AFTER_STOP.sub(r"\2\1", answer.strip())  # "x. [1] y" -> "x [1]. y"
    for sentence in _SENTENCE_END.split(answer):
        text = _MARKS.sub("", sentence).strip()
        if text and text.lower().rstrip(".") != ABSTAIN:
            out.append((text, parse_citations(sentence)))
    return out


def judge_entails(judge) -> Entails:
    """An Entails from a chat judge: a callable messages -> text, or a judge backend
    (lmlab.judge.backends: `.complete(conversations, max_tokens, choice=...)` -> texts), asked
    for one of "yes" / "no" (constrained where its decoder supports it)."""
    if hasattr(judge, "complete"):
        def call(messages):
            return judge.complete([messages], max_tokens=4, choice=["yes", "no"])[0]
    else:
        call = judge

    def entails(premise: str, statement: str) -> bool:
        reply = call([{"role": "user", "content": JUDGE_PROMPT.format(premise=premise, statement=statement)}])
        reply = getattr(reply, "text", reply)
        return str(reply).strip().lower().lstrip("*\"' ").startswith("yes")

    return entails


_WORD = re.compile(r"\w+")
_STOP = frozenset("a an the of in on at to for by with and or is are was were be been it its this that as from "
                  "which who what when where how their his her they he she".split())


def lexical_entails(threshold: float = 0.75) -> Entails:
    """Supported when at least `threshold` of the statement's content words occur in the premise."""

    def entails(premise: str, statement: str) -> bool:
        words = [w for w in _WORD.findall(statement.lower()) if w not in _STOP]
        if not words:
            return True
        have = set(_WORD.findall(premise.lower()))
        return sum(w in have for w in words) / len(words) >= threshold

    return entails


def _premise(passages: dict[int, str], ns: list[int]) -> str:
    return "\n\n".join(f"[{n}] {passages[n]}" for n in ns if n in passages)


def citation_scores(answer: str, passages: dict[int, str] | list[str], entails: Entails) -> dict:
    """ALCE citation recall and precision of one answer; passages numbered from 1 (a list) or by key."""
    passages = _numbered(passages)
    statements = split_statements(answer)
    recall_hits, n_cites, irrelevant = 0, 0, 0
    for text, cites in statements:
        cites = [n for n in cites if n in passages]
        if not cites:
            continue
        supported = entails(_premise(passages, cites), text)
        recall_hits += supported
        for n in cites:
            n_cites += 1
            if len(cites) == 1:
                irrelevant += not supported
                continue
            alone = entails(_premise(passages, [n]), text)
            rest = entails(_premise(passages, [m for m in cites if m != n]), text)
            irrelevant += not alone and rest == supported
    return {"citation_recall": recall_hits / len(statements) if statements else 0.0,
            "citation_precision": 1 - irrelevant / n_cites if n_cites else 0.0,
            "statements": len(statements), "citations": n_cites}


def faithfulness(answer: str, passages: dict[int, str] | list[str], entails: Entails) -> dict:
    """{"faithfulness", "unsupported", "statements": [{"text", "citations", "supported"}]}; an
    answer with no statements (an abstention) has faithfulness 1 and nothing unsupported."""
    passages = _numbered(passages)
    rows = []
    for text, cites in split_statements(answer):
        cited = [n for n in cites if n in passages] or sorted(passages)
        rows.append({"text": text, "citations": cites,
                     "supported": bool(passages) and entails(_premise(passages, cited), text)})
    unsupported = sum(not r["supported"] for r in rows)
    return {"faithfulness": 1 - unsupported / len(rows) if rows else 1.0, "unsupported": unsupported,
            "statements": rows}


def _numbered(passages) -> dict[int, str]:
    return dict(passages) if isinstance(passages, dict) else {n: p for n, p in enumerate(passages, 1)}
