"""The green-list watermark (Kirchenbauer et al. 2023) and its z-test detector.

At each step the previous token seeds a generator that splits the vocabulary into a green list
(a share `gamma` of it) and a red list; `delta` is added to the green logits, so watermarked text
holds more green tokens than the gamma a writer who does not know the split would hit. The
detector recomputes each token's green list from the token before it and tests the count:
z = (green - gamma T) / sqrt(T gamma (1 - gamma)).

The split is computed as transformers' WatermarkLogitsProcessor / WatermarkDetector compute it
for seeding_scheme="lefthash" (context width 1): seed = key * previous token, a CPU
torch.Generator, the first int(V * gamma) ids of randperm(V). The same settings therefore give
the same green lists, z-scores and p-values. Like transformers, the processor runs after
temperature and top-k/top-p (engine/params.py step 11). Green lists are always drawn on the CPU
so that a text's lists do not depend on the device that wrote it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch

from lmlab.errors import LmlabError

DEFAULT_KEY = 15485863  # transformers' default hashing key (the millionth prime); deploy with your own
SEEDING_SCHEMES = ("lefthash",)
DEFAULT_Z = 4.0  # the paper's threshold: a one-sided p of about 3e-5


@dataclass(frozen=True)
class Watermark:
    gamma: float = 0.25  # share of the vocabulary that is green (transformers' greenlist_ratio)
    delta: float = 2.0  # bias added to green logits (transformers' bias)
    key: int = DEFAULT_KEY  # transformers' hashing_key
    seeding_scheme: str = "lefthash"

    def __post_init__(self):
        if not isinstance(self.gamma, (int, float)) or not 0 < self.gamma < 1:
            raise LmlabError(f"watermark gamma must be in (0, 1), got {self.gamma!r}")
        if not isinstance(self.delta, (int, float)) or not 0 <= self.delta < math.inf:
            raise LmlabError(f"watermark delta must be >= 0 (and finite), got {self.delta!r}")
        if self.seeding_scheme not in SEEDING_SCHEMES:
            raise LmlabError(f"watermark seeding_scheme must be one of {', '.join(SEEDING_SCHEMES)}, "
                             f"got {self.seeding_scheme!r}")
        if not isinstance(self.key, int) or self.key <= 0:
            raise LmlabError(f"watermark key must be a positive integer, got {self.key!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def parse(value) -> Watermark | None:
    """A Watermark from None, a Watermark, a dict ({"gamma": .., "delta": ..}, a request's extra
    body) or a string "gamma=0.25,delta=2" ("" or "default" for the defaults)."""
    if value is None or value is False or isinstance(value, Watermark):
        return value or None
    if value is True:
        return Watermark()
    if isinstance(value, str):
        fields = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            if part == "default":
                continue
            name, eq, v = part.partition("=")
            if not eq:
                raise LmlabError(f"watermark setting {part!r} is not name=value (e.g. gamma=0.25,delta=2)")
            fields[name.strip()] = v.strip()
        value = {k: (v if k == "seeding_scheme" else _number(k, v)) for k, v in fields.items()}
    if not isinstance(value, dict):
        raise LmlabError(f"watermark must be a dict or 'gamma=..,delta=..', got {value!r}")
    unknown = set(value) - {"gamma", "delta", "key", "seeding_scheme"}
    if unknown:
        raise LmlabError(f"unknown watermark setting(s) {sorted(unknown)}; valid: gamma, delta, key, seeding_scheme")
    return Watermark(**value)


def _number(name: str, v: str):
    try:
        return int(v) if name == "key" else float(v)
    except ValueError:
        raise LmlabError(f"watermark {name} must be a number, got {v!r}") from None


class GreenLists:
    """Green-list masks [V] bool by previous token, for one (key, gamma, V); the most recently
    used are kept, since drawing a permutation of the vocabulary costs milliseconds."""

    def __init__(self, key: int, gamma: float, vocab_size: int, cache_size: int = 1024):
        self.key, self.vocab_size = key, vocab_size
        self.size = int(vocab_size * gamma)
        self.cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.rng = torch.Generator(device="cpu")

    def mask(self, prev: int) -> torch.Tensor:
        m = self.cache.get(prev)
        if m is not None:
            self.cache.move_to_end(prev)
            return m
        self.rng.manual_seed((self.key * int(prev)) % (2**64 - 1))
        green = torch.randperm(self.vocab_size, generator=self.rng)[:self.size]
        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        m[green] = True
        self.cache[prev] = m
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return m


_lists: dict[tuple[int, float, int], GreenLists] = {}


def green_lists(w: Watermark, vocab_size: int) -> GreenLists:
    k = (w.key, w.gamma, vocab_size)
    if k not in _lists:
        _lists[k] = GreenLists(w.key, w.gamma, vocab_size)
    return _lists[k]


def apply(logits: torch.Tensor, marks: list[Watermark | None], prev: list[int]) -> torch.Tensor:
    """Add each row's delta to its green list (seeded by the row's previous token `prev`)."""
    rows = [i for i, w in enumerate(marks) if w is not None and w.delta]
    if not rows:
        return logits
    V = logits.shape[-1]
    masks = torch.stack([green_lists(marks[i], V).mask(prev[i]) for i in rows]).to(logits.device)
    delta = torch.tensor([marks[i].delta for i in rows], device=logits.device, dtype=logits.dtype)
    logits[rows] += masks * delta[:, None]
    return logits


@dataclass
class Detection:
    z: float
    p_value: float
    green_fraction: float
    tokens: int  # tokens scored (all but the first, whose seed is not in the text)
    green: int
    watermarked: bool

    def to_dict(self) -> dict:
        return {"z": self.z, "p_value": self.p_value, "green_fraction": self.green_fraction,
                "tokens": self.tokens, "watermarked": self.watermarked}


MIN_TOKENS = 2  # one seed and one scored token; far more are needed for a confident call


def detect(token_ids: list[int], vocab_size: int, w: Watermark | None = None, z_threshold: float = DEFAULT_Z,
           bos_token_id: int | None = None) -> Detection:
    """The z-test on a text's token ids (the prompt left out: it was not watermarked). A leading
    BOS is dropped, as transformers' detector drops it."""
    w = w or Watermark()
    ids = list(token_ids)
    if ids and bos_token_id is not None and ids[0] == bos_token_id:
        ids = ids[1:]
    if not ids:
        raise LmlabError("empty text: nothing to test for a watermark")
    if len(ids) < MIN_TOKENS:
        raise LmlabError(f"text too short for watermark detection: {len(ids)} token(s), need at least "
                         f"{MIN_TOKENS} (and a few dozen for a confident answer)")
    lists = green_lists(w, vocab_size)
    green = sum(bool(lists.mask(a)[b]) for a, b in zip(ids, ids[1:]))
    T = len(ids) - 1
    z = (green - w.gamma * T) / math.sqrt(T * w.gamma * (1 - w.gamma))
    p = 0.5 * math.erfc(z / math.sqrt(2))
    return Detection(z, p, green / T, T, green, z > z_threshold)
