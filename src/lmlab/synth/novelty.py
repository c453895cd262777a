"""Self-Instruct's novelty rule: a new instruction is kept only if its ROUGE-L F-measure against
every kept one is below a threshold (0.7 in the paper), without N^2 full comparisons.

ROUGE-L's F (beta = 1) is 2 LCS / (|a| + |b|), and an LCS is at most the multiset overlap of
the two token lists. An inverted index over the rarer tokens gives that overlap's bound for
every kept instruction at once (the most frequent tokens are not indexed: each can add at most its
count in the new instruction); only those whose bound can reach the threshold get an exact LCS.
Tokens are rouge-score's (lowercased alphanumeric runs, no stemming), so the scores equal
`rouge_score.rouge_scorer.RougeScorer(["rougeL"])`'s.
"""

from __future__ import annotations

import collections
import re

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
FREQUENT = 64  # the most frequent tokens seen so far go unindexed


def tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation without stemming."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    return 2 * lcs(a, b) / (len(a) + len(b))


class NoveltyFilter:
    """Holds the kept instructions; `add(text)` keeps it only if it is novel enough."""

    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold
        self.kept: list[list[str]] = []
        self.texts: list[str] = []
        self.counts: list[collections.Counter] = []
        self.postings: dict[str, list[int]] = collections.defaultdict(list)
        self.frequency: collections.Counter = collections.Counter()
        self.by_length: dict[int, list[int]] = collections.defaultdict(list)
        self.exact_comparisons = 0  # how many LCS were computed (the index's saving shows here)

    def most_similar(self, text: str) -> tuple[float, int | None]:
        """(best ROUGE-L against the kept ones that could reach the threshold, its index)."""
        toks = tokens(text)
        if not toks:
            return 1.0, None  # empty text is never novel
        ca = collections.Counter(toks)
        frequent = {t for t, _ in self.frequency.most_common(FREQUENT)}
        slack = sum(c for t, c in ca.items() if t in frequent)  # what unindexed tokens can add
        overlap: collections.Counter = collections.Counter()
        for t, c in ca.items():
            if t in frequent:
                continue
            for d in self.postings.get(t, ()):
                overlap[d] += min(c, self.counts[d][t])
        need = self.threshold / 2
        candidates = set(overlap)
        # one sharing no indexed token can reach the threshold only if it is short enough
        longest = int(slack / need) - len(toks)
        for length in range(1, longest + 1):
            candidates.update(self.by_length.get(length, ()))
        best, arg = 0.0, None
        for d in sorted(candidates):
            n = len(toks) + len(self.kept[d])
            if min(overlap[d] + slack, len(toks), len(self.kept[d])) < need * n:
                continue  # cannot reach the threshold
            self.exact_comparisons += 1
            score = rouge_l(toks, self.kept[d])
            if score > best:
                best, arg = score, d
        return best, arg

    def add(self, text: str) -> bool:
        best, _ = self.most_similar(text)
        if best >= self.threshold:
            return False
        self._keep(text)
        return True

    def _keep(self, text: str) -> None:
        toks = tokens(text)
        d = len(self.kept)
        self.kept.append(toks)
        self.by_length[len(toks)].append(d)
        self.texts.append(text)
        c = collections.Counter(toks)
        self.counts.append(c)
        self.frequency.update(c.keys())
        for t in c:
            self.postings[t].append(d)
