"""Corpora written by the tests, with what is planted in them known exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office door health person "
         "art war history party result change morning reason research girl guy moment air teacher force education").split()
FILLER = ("the", "of", "and", "to", "with", "that", "have", "be")


def sentence(rng: random.Random, n: int = 12) -> str:
    ws = [rng.choice(WORDS) if i % 3 else rng.choice(FILLER) for i in range(n)]
    return " ".join(ws).capitalize() + "."


def document(rng: random.Random, sentences: int = 12) -> str:
    """A prose document that passes Gopher and C4: lines of full sentences, stop words, 100+ words."""
    lines = [" ".join(sentence(rng) for _ in range(3)) for _ in range(sentences // 3)]
    return "\n".join(lines)


def near_copy(rng: random.Random, text: str, edit: float) -> str:
    """The text with a share `edit` of its words replaced (by a word not already there)."""
    ws = text.split(" ")
    for i in rng.sample(range(len(ws)), round(edit * len(ws))):
        ws[i] = "x" + rng.choice(WORDS)
    return " ".join(ws)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
