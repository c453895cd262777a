"""Deduplication: exact (a hash of the normalised text) and near (MinHash-LSH).

Near dedup follows FineWeb's defaults and datatrove's stages, so that no process needs every
signature at once:
  1. signatures: per document (in the workers), word 5-gram shingles -> 14 x 8 MinHash values ->
     one hash per band of 8 (`band_hashes`);
  2. buckets: per band, the documents whose band hashes are equal are candidate duplicates
     (`band_pairs`: one band of every document in memory, sorted; never the full signatures);
  3. clusters: union-find over the candidate pairs; each cluster keeps its first document and
     every other member is removed, recording its cluster (the kept document) and size.
Two documents with Jaccard similarity s become candidates with probability 1 - (1 - s^8)^14:
0.5 at s = 0.72, 0.94 at s = 0.8.

Shingles are hashed with numpy: each word once (xxh64, memoised), then the 5 word hashes of
each shingle combined in one vectorised step, then 112 permutations a*h + b
(datatrove's a, b for the same seed). benchmarks/curate_speed.py measures this against datasketch's
MinHash (its `update_batch`, also vectorised) on the same documents (its table "MinHash signatures"): numpy is
the faster, so datasketch is only the reference in the tests.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lmlab.config import option

MERSENNE = (1 << 61) - 1  # numpy is imported inside the functions: `lmlab --help` stays instant


@dataclass
class ExactDedupConfig:
    enabled: bool = option(True, "drop documents whose normalised text was seen before")
    lowercase: bool = option(True, "compare case-insensitively")


@dataclass
class MinHashConfig:
    enabled: bool = option(True, "MinHash-LSH near-duplicate removal")
    ngram: int = option(5, "words per shingle")
    bands: int = option(14, "LSH bands (buckets)")
    rows: int = option(8, "hashes per band")
    seed: int = 1


def exact_key(text: str, lowercase: bool = True) -> int:
    """64-bit hash of the text with whitespace runs collapsed (and lowercased)."""
    import xxhash

    t = " ".join(text.split())
    return xxhash.xxh64_intdigest((t.lower() if lowercase else t).encode("utf-8"))


# ---- stage 1: signatures ---------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")  # punctuation acts as a space
_DIGIT = re.compile(r"[1-9]")
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def simplify(text: str) -> list[str]:
    """datatrove's simplify_text: lowercase, no diacritics, digits as 0, punctuation as space."""
    t = text.lower()
    if not t.isascii():
        t = _COMBINING.sub("", unicodedata.normalize("NFD", t))
    return _WORD.findall(_DIGIT.sub("0", t))


_word_hash: dict[str, int] = {}


def _hash_words(ws: list[str]) -> np.ndarray:
    import numpy as np
    import xxhash

    memo = _word_hash
    if len(memo) > 2_000_000:
        memo.clear()
    get = memo.get
    for w in set(ws):
        if get(w) is None:
            memo[w] = xxhash.xxh64_intdigest(w.encode("utf-8"))
    return np.array([memo[w] for w in ws], dtype=np.uint64)


_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93,
        0xCA5A826395121157, 0x2545F4914F6CDD1D, 0x9FB21C651E98DF25, 0xFF51AFD7ED558CCD)


def shingles(text: str, n: int) -> np.ndarray:
    """uint64 hashes of the word n-grams of the simplified text (one shingle if it is shorter)."""
    import numpy as np

    wh = _hash_words(simplify(text))
    return np.unique(_combine(wh, n)) if len(wh) else wh


def _combine(wh: np.ndarray, n: int) -> np.ndarray:
    """Hashes of the n-grams of a sequence of word hashes (one, of all, if it is shorter)."""
    import numpy as np

    if len(wh) < n:
        n = len(wh)
    m = len(wh) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):  # position-dependent multipliers keep "a b" and "b a" apart
            h ^= wh[k:k + m] * np.uint64(_MIX[k % len(_MIX)])
            h = (h << np.uint64(13)) | (h >> np.uint64(51))
    return h


class MinHasher:
    def __init__(self, cfg: MinHashConfig):
        import numpy as np

        self.cfg = cfg
        gen = np.random.RandomState(cfg.seed)  # datatrove's parameters for the same seed
        k = cfg.bands * cfg.rows
        self.a = gen.randint(1, np.uint64(MERSENNE), dtype=np.uint64, size=(1, k))
        self.b = gen.randint(0, np.uint64(MERSENNE), dtype=np.uint64, size=(1, k))

    def signature(self, text: str) -> np.ndarray | None:
        import numpy as np

        sh = shingles(text, self.cfg.ngram)
        if len(sh) == 0:
            return None
        with np.errstate(over="ignore"):
            # a*h + b over 64 bits (multiply-add hashing), without datatrove's mod 2^61-1: the
            # modulo cost as much as everything else and the family stays universal.
            return (sh.reshape(-1, 1) * self.a + self.b).min(axis=0)

    def band_hashes(self, text: str) -> np.ndarray:
        """One uint64 per band (0 for a document without words: never a candidate)."""
        import numpy as np

        sig = self.signature(text)
        if sig is None:
            return np.zeros(self.cfg.bands, dtype=np.uint64)
        rows = sig.reshape(self.cfg.bands, self.cfg.rows)
        h = np.full(self.cfg.bands, 0xCBF29CE484222325, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.cfg.rows):
                h = (h ^ rows[:, j]) * np.uint64(0x100000001B3)
        h[h == 0] = 1
        return h


# ---- stage 2: buckets ------------------------------------------------------------------------

def band_pairs(band: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
    """(k, 2) pairs (first document of the bucket, another member) for one band's hashes."""
    import numpy as np

    keep = band != 0
    band, doc_ids = band[keep], doc_ids[keep]
    order = np.lexsort((doc_ids, band))
    h, d = band[order], doc_ids[order]
    same = np.flatnonzero(h[1:] == h[:-1]) + 1
    if len(same) == 0:
        return np.empty((0, 2), dtype=np.int64)
    # the bucket's first member: the start of each run of equal hashes
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    first = d[starts[np.searchsorted(starts, same, side="right") - 1]]
    return np.stack([first, d[same]], axis=1)


# ---- stage 3: clusters -----------------------------------------------------------------------

def clusters(pairs) -> dict[int, tuple[int, int]]:
    """{removed doc: (kept doc of its cluster, cluster size)}; the kept doc is the first (smallest id)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for block in pairs:
        for a, b in block.tolist():
            ra, rb = find(a), find(b)
            if ra != rb:
                if rb < ra:
                    ra, rb = rb, ra
                parent[rb] = ra
    members: dict[int, list[int]] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    out = {}
    for root, ms in members.items():
        size = len(set(ms) | {root})
        for m in ms:
            if m != root:
                out[m] = (root, size)
    return out
