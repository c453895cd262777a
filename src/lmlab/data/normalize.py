"""Normalisation: broken encodings (mojibake) and Unicode forms fixed with ftfy.

`fix_text` repairs text that was decoded with the wrong codec ("cafÃ©" -> "café"), HTML
entities left in text, curly-quote soup, and applies NFC so that the same word is the same
code points everywhere (dedup hashes depend on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.config import option


@dataclass
class NormalizeConfig:
    enabled: bool = option(True, "fix broken encodings and Unicode forms (ftfy)")
    form: str = option("NFC", "Unicode normalisation form", choices=("NFC", "NFKC", "none"))
    min_chars: int = option(1, "drop records shorter than this after normalisation")


def normalize(batch: list[dict], cfg: NormalizeConfig) -> tuple[list[dict], list[tuple[dict, str]]]:
    import ftfy

    fix = ftfy.TextFixerConfig(normalization=None if cfg.form == "none" else cfg.form, explain=False)
    kept, removed = [], []
    for r in batch:
        text = ftfy.fix_text(r["text"], fix)
        if len(text.strip()) < cfg.min_chars:
            removed.append((r, "empty after normalisation"))
            continue
        kept.append(r if text == r["text"] else {**r, "text": text})
    return kept, removed
