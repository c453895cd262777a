"""English word splitting as spaCy's blank "en" tokenizer does it, at the speed of a few regexes.

datatrove's Gopher and C4 filters count words and sentences with spaCy (`spacy.blank("en")` and
its sentencizer), which costs most of their time. `words()` follows spaCy's algorithm for what
those rules count: split on whitespace; peel prefix and suffix punctuation off each piece one
mark at a time ("(ok)," -> "(", "ok", ")", ","); keep URLs, e-mail addresses, "U.S." and titles
such as "Mr." whole; split contractions ("don't" -> "do", "n't"); split inside a piece only at
spaCy's infixes (hyphens between letters, "..." , "/" or ":" before a letter). Pieces repeat a
lot in web text, so their splits are memoised. tests/data/test_quality.py checks the filters'
decisions against datatrove's on the same documents.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset("Mr. Mrs. Ms. Dr. St. Jr. Sr. Prof. Rev. Gen. Gov. Sen. Rep. Mt. vs. e.g. i.e. Inc. "
                          "Ltd. Co. Corp. Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. a.m. p.m. "
                          "Ph.D. Jan. Calif. Wis. Mass. Conn. Ill. Mich. Minn. Ore. Pa. Va. Wash. Ariz.".split())
_URL = re.compile(r"^(?:(?:https?|ftp)://|www\.)\S+$|^[\w.+-]+@[\w-]+(?:\.[\w-]+)+$")
_PREFIX = re.compile(r"^(?:\.\.+|…|[§%=—–+\-](?![0-9])|[(\[{\"'`“‘«¿¡$£€¥#&*,:;!?<>~|/\\^_]|'')")
_SUFFIX = re.compile(r"(?:\.\.+|…|['’][sS]|[)\]}\"'”“’»,;:!?%°>]|(?<=[0-9])(?:km|kg|mm|cm|ft|mph|pm|am|m|M|bn|g|lb|ml)|(?<=[^\W\d_])\.(?<![A-Z]\.)|(?<=[A-Z][A-Z])\.|"
                     r"(?<=[0-9%)\]}\"'])\.|—|–|(?<=[^\W\d_])-)$")
_INFIX = re.compile(r"\.\.+|…|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[^\W\d_]),(?=[^\W\d_])|"
                    r"(?<=[^\W_])(?:--|---|-|–|—|~)(?=[^\W\d_])|(?<=[^\W_])[:<>=/](?=[^\W\d_])")
_CONTRACTION = re.compile(r"^([^\W\d_]+?)(n['’]t|['’](?:re|ve|ll|d|m|s))$", re.IGNORECASE)
_ABBR_DOT = re.compile(r"^(?:[A-Za-z]\.)+$")  # U.S., e.g., C.

_memo: dict[str, tuple[str, ...]] = {}


def words(text: str) -> list[str]:
    out: list[str] = []
    memo = _memo
    for piece in text.split():
        toks = memo.get(piece)
        if toks is None:
            toks = _split(piece)
            if len(memo) > 500_000:  # bound the memo on huge corpora
                memo.clear()
            memo[piece] = toks
        out.extend(toks)
    return out


def _special(s: str) -> tuple[str, ...] | None:
    if s in ABBREVIATIONS or _ABBR_DOT.match(s) or _URL.match(s):
        return (s,)
    m = _CONTRACTION.match(s)
    if m:
        return (m.group(1), m.group(2))
    return None


def _split(s: str) -> tuple[str, ...]:
    prefixes: list[str] = []
    suffixes: list[str] = []
    while s:
        sp = _special(s)
        if sp is not None:
            return tuple(prefixes + list(sp) + suffixes[::-1])
        m = _PREFIX.match(s)
        if m and m.end() < len(s) or (m and len(s) == m.end() and len(s) > 0 and not prefixes and False):
            prefixes.append(s[:m.end()])
            s = s[m.end():]
            continue
        m = _SUFFIX.search(s)
        if m and m.start() > 0:
            suffixes.append(s[m.start():])
            s = s[:m.start()]
            continue
        break
    mid: list[str] = []
    if s:
        start = 0
        for m in _INFIX.finditer(s):
            if m.start() > start:
                mid.append(s[start:m.start()])
            mid.append(m.group())
            start = m.end()
        if start < len(s):
            mid.append(s[start:])
    return tuple(prefixes + mid + suffixes[::-1])


def is_punct(token: str) -> bool:
    return not any(c.isalnum() for c in token)


# spaCy's Sentencizer: a sentence ends after one of these tokens, before the next non-punctuation.
SENTENCE_PUNCT = frozenset("!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？｡。")


def count_sentences(text: str) -> int:
    """Sentences as spaCy's sentencizer splits them (what datatrove's C4 filter counts)."""
    toks = words(text)
    if not toks:
        return 0
    n, seen_period = 1, False
    for tok in toks:
        in_punct = tok in SENTENCE_PUNCT
        if seen_period and not in_punct and not is_punct(tok):
            n += 1
            seen_period = False
        elif in_punct:
            seen_period = True
    return n
