"""Filters shared by the synthesizers: why an instruction is not worth keeping (None: keep it).

From Self-Instruct's pipeline: too short or too long, a task a text model cannot do (images,
graphs, files, audio...), a first character that is not a letter or digit (punctuation, a
continuation of the list)."""

from __future__ import annotations

import re

# Self-Instruct's list of tasks a language model cannot perform
KEYWORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
            "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_KEYWORD = re.compile(r"\b(" + "|".join(re.escape(k) for k in KEYWORDS) + r")\b", re.I)


def why_dropped(instruction: str, min_words: int = 3, max_words: int = 150) -> str | None:
    words = instruction.split()
    if len(words) < min_words:
        return "too short"
    if len(words) > max_words:
        return "too long"
    m = _KEYWORD.search(instruction)
    if m:
        return f"keyword ({m.group(1).lower()})"
    if instruction.lower().startswith("write a program"):
        return "asks for a program"
    if not instruction[0].isalnum():
        return "starts with punctuation"
    if not instruction[0].isascii():
        return "starts with a non-English character"
    return None


def screen(texts, novelty, dropped: dict[str, int]) -> list[str]:
    """The texts that pass the filters and are novel (kept in `novelty`); the others are counted
    in `dropped` by reason."""
    fresh = []
    for t in texts:
        why = why_dropped(t)
        if why is None and not novelty.add(t):
            why = "similar (ROUGE-L)"
        if why:
            dropped[why] = dropped.get(why, 0) + 1
        else:
            fresh.append(t)
    return fresh
