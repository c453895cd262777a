"""Toxicity filtering: a word list per language, plus an optional offline classifier.

Lists live in lmlab/data/wordlists/<lang>.txt (en, ko, de, fr, es); a record's language comes
from the language step (English when it did not run). Space-separated languages match whole
words; Korean, Japanese and Chinese match substrings, since particles attach to the word. C4
dropped any page holding a listed word; `max_hits` keeps that default (0).

The optional classifier is alt-profanity-check (`classifier: profanity_check`): a linear SVM
over character n-grams, English only, whose trained model ships inside the package, so it runs
offline. It is not installed with lmlab (pip install alt-profanity-check). We know of no
multilingual toxicity classifier that ships its weights in a package: Detoxify and the
HF-hub classifiers download theirs at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from lmlab.config import option
from lmlab.errors import LmlabError

LISTS = Path(__file__).parent / "wordlists"
SUBSTRING_LANGS = ("ko", "ja", "zh", "th")


@dataclass
class ToxicityConfig:
    enabled: bool = option(True, "drop records with listed obscenities or slurs")
    max_hits: int = option(0, "listed words allowed per record")
    wordlists: Optional[str] = option(None, "folder of <lang>.txt lists to use instead of the shipped ones")
    classifier: Optional[str] = option(None, "profanity_check: also score English text with alt-profanity-check",
                                       choices=("profanity_check",))
    classifier_threshold: float = 0.9


def languages(folder: str | None = None) -> list[str]:
    return sorted(p.stem for p in Path(folder or LISTS).glob("*.txt"))


@lru_cache(maxsize=64)
def _matcher(lang: str, folder: str | None):
    path = Path(folder or LISTS) / f"{lang}.txt"
    if not path.is_file():
        return None
    ws = [w.strip().lower() for w in path.read_text(encoding="utf-8").splitlines()
          if w.strip() and not w.startswith("#")]
    alt = "|".join(re.escape(w) for w in sorted(ws, key=len, reverse=True))
    if lang in SUBSTRING_LANGS:
        return re.compile(alt)
    return re.compile(rf"(?<!\w)(?:{alt})(?!\w)", re.IGNORECASE)


def hits(text: str, lang: str = "en", folder: str | None = None) -> list[str]:
    m = _matcher(lang, folder)
    return [h.lower() for h in m.findall(text)] if m else []


@lru_cache(maxsize=1)
def _classifier():
    try:
        from profanity_check import predict_prob
    except ImportError:
        raise LmlabError("toxicity.classifier=profanity_check needs alt-profanity-check: "
                         "pip install alt-profanity-check") from None
    return predict_prob


def toxicity(batch: list[dict], cfg: ToxicityConfig):
    kept, removed, scored = [], [], []
    for r in batch:
        lang = r.get("language") or "en"
        found = hits(r["text"], lang, cfg.wordlists)
        if len(found) > cfg.max_hits:
            removed.append((r, f"{len(found)} listed word(s) ({lang}): {', '.join(sorted(set(found))[:5])}"))
        else:
            kept.append(r)
            scored.append(lang == "en")
    if cfg.classifier and any(scored):
        english = [r for r, s in zip(kept, scored) if s]
        probs = _classifier()([r["text"] for r in english])
        bad = {id(r): p for r, p in zip(english, probs) if p >= cfg.classifier_threshold}
        removed += [(r, f"profanity_check {bad[id(r)]:.2f}") for r in kept if id(r) in bad]
        kept = [r for r in kept if id(r) not in bad]
    return kept, removed
