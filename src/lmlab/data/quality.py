"""Quality filters: Gopher's document rules (Rae et al. 2021, Table A1 and section A.1.1) and
C4's line rules (Raffel et al. 2020), with their published thresholds.

The rules and their order are datatrove's GopherQualityFilter, GopherRepetitionFilter and
C4QualityFilter, so a document gets the same decision and the same reason name; words are
counted as spaCy's English tokenizer counts them (lmlab.data.words). C4 also rewrites the text it
keeps: lines without terminal punctuation, with fewer than 3 words, or mentioning JavaScript
or cookie policies are dropped from the document. Both are English rules (stop words, word
lengths, Latin punctuation), so by default they apply only to records labelled English.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from lmlab.config import option
from lmlab.data.words import count_sentences, words

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# datatrove's PUNCTUATION_SET: ASCII and CJK punctuation, control characters, terminal marks.
_PUNCT = set("!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»")
_PUNCT |= {chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)}


def _punct_set() -> frozenset:
    from lmlab.data.words import SENTENCE_PUNCT
    # datatrove adds its TERMINAL_PUNCTUATION list; the sentence marks cover the same scripts.
    return frozenset(_PUNCT | SENTENCE_PUNCT)


PUNCTUATION_SET = _punct_set()


@dataclass
class GopherConfig:
    enabled: bool = option(True, "Gopher quality rules")
    languages: list[str] = option(help="apply to records in these languages (English stop words and word "
                                       "lengths); others pass untouched", factory=lambda: ["en"])
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3
    max_avg_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8  # the share of words with a letter must reach this
    min_stop_words: int = 2
    repetition: bool = option(True, "Gopher repetition rules (duplicate lines, paragraphs, n-grams)")
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_n_grams: list[list[float]] = option(factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]])
    dup_n_grams: list[list[float]] = option(factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12],
                                                              [9, 0.11], [10, 0.10]])


@dataclass
class C4Config:
    enabled: bool = option(True, "C4 line rules")
    languages: list[str] = option(help="apply to records in these languages; others pass untouched",
                                  factory=lambda: ["en"])
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5  # -1: off
    min_words_per_line: int = 3  # -1: off
    max_word_length: int = 1000  # -1: off
    remove_citations: bool = True
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


def gopher_quality(text: str, c: GopherConfig) -> str | None:
    """The reason the document fails Gopher's quality rules, or None if it passes."""
    ws = words(text)
    n_words = len(ws)
    non_symbol = [w for w in ws if any(ch not in PUNCTUATION_SET for ch in w)]
    n = len(non_symbol)
    if c.min_doc_words and n < c.min_doc_words:
        return "gopher_short_doc"
    if c.max_doc_words and n > c.max_doc_words:
        return "gopher_long_doc"
    avg = sum(map(len, non_symbol)) / n if n else float("nan")
    if c.min_avg_word_length and avg < c.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if c.max_avg_word_length and avg > c.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if c.max_symbol_word_ratio and text.count("#") / n_words > c.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if c.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > c.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if c.max_bullet_lines_ratio and sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) \
            > c.max_bullet_lines_ratio:
        return "gopher_too_many_bullets"
    if c.max_ellipsis_lines_ratio and sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) \
            > c.max_ellipsis_lines_ratio:
        return "gopher_too_many_end_ellipsis"
    if c.max_non_alpha_words_ratio and sum(any(ch.isalpha() for ch in w) for w in ws) / n_words \
            < c.max_non_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if c.min_stop_words and len(set(STOP_WORDS).intersection(ws)) < c.min_stop_words:
        return "gopher_enough_stop_words"
    return None


_PARAGRAPH = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")


def _duplicates(items: list[str]) -> tuple[int, int]:
    seen, dup_n, dup_chars = set(), 0, 0
    for x in items:
        if x in seen:
            dup_n += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup_n, dup_chars


def _all_duplicate_chars(ws: list[str], n: int) -> int:
    seen, chars, i = set(), 0, 0
    while i < len(ws) - n + 1:
        gram = "".join(ws[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def gopher_repetition(text: str, c: GopherConfig) -> str | None:
    if not text:
        return "empty"
    paragraphs = _PARAGRAPH.split(text.strip())
    dup, chars = _duplicates(paragraphs)
    if c.dup_para_frac and dup / len(paragraphs) > c.dup_para_frac:
        return "dup_para_frac"
    if c.dup_para_char_frac and chars / len(text) > c.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = _LINES.split(text)
    dup, chars = _duplicates(lines)
    if c.dup_line_frac and dup / len(lines) > c.dup_line_frac:
        return "dup_line_frac"
    if c.dup_line_char_frac and chars / len(text) > c.dup_line_char_frac:
        return "dup_line_char_frac"
    ws = words(text)
    for n, frac in c.top_n_grams:
        n = int(n)
        grams = [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]
        if not grams:
            continue
        top, count = Counter(grams).most_common(1)[0]
        if len(top) * count / len(text) > frac:
            return f"top_{n}_gram"
    for n, frac in c.dup_n_grams:
        if _all_duplicate_chars(ws, int(n)) / len(text) > frac:
            return f"duplicated_{int(n)}_n_grams"
    return None


CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")


def c4_lines(text: str, c: C4Config) -> tuple[str | None, str]:
    """(reason the document is dropped or None, the text with C4's rejected lines removed)."""
    n_sentences, kept = 0, []
    for line in text.splitlines():
        line = line.strip()
        ws = line.split()
        if c.max_word_length != -1 and any(len(w) > c.max_word_length for w in ws):
            continue
        if c.remove_citations:
            line = CITATION.sub("", line)
        if c.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            continue
        if len(ws) < c.min_words_per_line:
            continue
        low = line.lower()
        if c.filter_lorem_ipsum and "lorem ipsum" in low:
            return "lorem_ipsum", text
        if c.filter_javascript and "javascript" in low:
            continue
        if c.filter_curly_bracket and "{" in line:
            return "curly_bracket", text
        if c.filter_policy and any(p in low for p in POLICY_SUBSTRINGS):
            continue
        if c.min_num_sentences != -1:
            n_sentences += count_sentences(line)
        kept.append(line)
    if n_sentences < c.min_num_sentences:
        return "too_few_sentences", text
    return None, "\n".join(kept).strip()


def _applies(r: dict, languages: list[str]) -> bool:
    """A record without a language (the language step off) is taken for English."""
    return not languages or r.get("language", "en") in languages


def gopher(batch: list[dict], cfg: GopherConfig):
    kept, removed = [], []
    for r in batch:
        if not _applies(r, cfg.languages):
            kept.append(r)
            continue
        why = gopher_quality(r["text"], cfg) or (gopher_repetition(r["text"], cfg) if cfg.repetition else None)
        if why:
            removed.append((r, why))
        else:
            kept.append(r)
    return kept, removed


def c4(batch: list[dict], cfg: C4Config):
    kept, removed = [], []
    for r in batch:
        if not _applies(r, cfg.languages):
            kept.append(r)
            continue
        why, text = c4_lines(r["text"], cfg)
        if why:
            removed.append((r, why))
        else:
            kept.append(r if text == r["text"] else {**r, "text": text})
    return kept, removed
