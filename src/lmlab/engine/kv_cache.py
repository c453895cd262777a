"""Key/value caches. A cache gives the model three things: `length`, `update(layer, k, v)` and
`mask(T, key_mask, window)`, so the model never needs to know how rows are laid out.

- KVCache: every row has the same length (a left-padded batch, beam search).
- SlotCache: each row ("slot") has its own length, so sequences can join and leave a running
  batch between steps (continuous batching). Buffers are preallocated and grown rarely:
  a torch.cat per layer per token would dominate small-model decoding. The engine shrinks them
  (`resize`) when the running work needs far less, so memory follows the work.
"""

from __future__ import annotations

import torch

from lmlab.model.config import ModelConfig
from lmlab.model.transformer import causal_mask


class KVCache:
    def __init__(self, config: ModelConfig, batch_size: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.max_len = max_len
        self.length = 0  # tokens already stored (the same for every row of the batch)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this step's keys/values for `layer`; return everything cached for it so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} tokens > capacity {self.max_len}")
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def mask(self, T: int, key_mask, window: int | None, device):
        return causal_mask(key_mask, self.length, T, window, device)

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep/duplicate batch rows (beam search, n samples per prompt)."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]


class SlotCache:
    """Rows 0..active-1 are in use; row i holds lengths[i] tokens at positions 0..lengths[i]-1.

    Prefill goes through `view(i, n)`, a KVCache-like view on n rows. A batched decode step then
    feeds one token per active row (between begin_decode and end_decode); each row writes at its
    own position and attends to its own keys only.
    """

    def __init__(self, config: ModelConfig, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", slots: int = 1, max_len: int = 256):
        self.config, self.dtype, self.device = config, dtype, device
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.lengths: list[int] = []
        self.active = 0
        self.idle = (slots, max_len)  # the size an empty engine goes back to
        self.resize(slots, max_len)

    # ---- capacity ----

    @property
    def capacity(self) -> tuple[int, int]:
        """(slots, tokens per slot) allocated."""
        return self.k[0].shape[0], self.k[0].shape[2]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def resize(self, slots: int, max_len: int) -> None:
        """Reallocate to exactly `slots` x `max_len`, keeping what is stored in the rows and
        positions both sizes hold (the caller keeps the live rows inside them)."""
        c = self.config
        shape = (slots, c.n_kv_heads, max_len, c.head_dim)
        shrink = bool(self.k) and slots * max_len < self.k[0].shape[0] * self.k[0].shape[2]
        old = self.k + self.v
        self.k, self.v = [], []  # let the old buffers go before the new ones come, where possible
        new = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(2 * c.n_layers)]
        if old:
            s, L = min(slots, old[0].shape[0]), min(max_len, old[0].shape[2])
            for o, n in zip(old, new):
                n[:s, :, :L] = o[:s, :, :L]
        del old
        self.k, self.v = new[:c.n_layers], new[c.n_layers:]
        self.lengths = (self.lengths + [0] * slots)[:slots]
        if shrink and torch.device(self.device).type == "cpu":
            _trim_heap()  # the freed buffers go back to the machine, not only to Python

    def reserve(self, slots: int, max_len: int, limit: int | None = None) -> None:
        """Make room for `slots` rows of `max_len` tokens. Both dimensions at least double when they
        grow: requests admitted one at a time then copy the cache O(log n) times, not once per
        request. Where doubling would pass `limit` (slots x tokens), exactly what is asked is
        allocated (rows beyond `slots` are free and may be dropped)."""
        have_slots, have_len = self.capacity
        if self.active == 0 and slots * max_len * 4 < have_slots * have_len:
            # idle and far too big: replaced by what is asked for (the factor keeps alternating
            # sizes from reallocating each time)
            self.lengths = []
            self.resize(slots, max_len)
        elif slots > have_slots or max_len > have_len:
            grown = _grow(slots, have_slots), _grow(max_len, have_len)
            if limit is not None and grown[0] * grown[1] > limit:
                grown = slots, max_len
            self.resize(*grown)

    def release(self) -> None:
        """Give the buffers back (down to one short row) when no row is in use."""
        if self.active == 0 and self.nbytes > self._bytes(1, 256):
            self.lengths = []
            self.resize(1, 256)
            if torch.device(self.device).type == "cpu":
                _trim_heap()

    def _bytes(self, slots: int, max_len: int) -> int:
        c, size = self.config, torch.empty((), dtype=self.dtype).element_size()
        return 2 * c.n_layers * slots * c.n_kv_heads * max_len * c.head_dim * size


    # ---- slots ----

    def view(self, i: int, n: int = 1) -> KVCache:
        """A view of rows i..i+n-1 sharing this cache's storage (for prefill), starting empty."""
        view = KVCache.__new__(KVCache)
        view.k = [t[i:i + n] for t in self.k]
        view.v = [t[i:i + n] for t in self.v]
        view.max_len, view.length = self.k[0].shape[2], 0
        return view

    def copy(self, src: int, dst: int) -> None:
        n = self.lengths[src]
        for t in self.k + self.v:
            t[dst, :, :n] = t[src, :, :n]
        self.lengths[dst] = n

    # ---- a decode step over rows 0..active-1 ----
    # The engine calls begin_decode() before the model's forward and end_decode() after it, so
    # that everything the model reads is a tensor or a plain int (torch.compile friendly).

    def begin_decode(self, windows: set) -> None:
        n = self.active
        self.rows = torch.arange(n, device=self.device)
        self.pos = torch.tensor(self.lengths[:n], device=self.device)
        self.end = max(self.lengths[:n]) + 1
        self.masks = {}
        for w in windows:
            if w is None and all(x == self.lengths[0] for x in self.lengths[:n]):
                self.masks[w] = None  # equal lengths: every row attends to everything cached
                continue
            k_pos = torch.arange(self.end, device=self.device)[None, :]
            allowed = k_pos <= self.pos[:, None]
            if w is not None:
                allowed = allowed & (self.pos[:, None] - k_pos < w)
            self.masks[w] = allowed[:, None, None, :]

    def end_decode(self) -> None:
        for i in range(self.active):
            self.lengths[i] += 1

    @property
    def length(self) -> int:
        return self.end - 1

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.k[layer][self.rows, :, self.pos] = k[:, :, 0]
        self.v[layer][self.rows, :, self.pos] = v[:, :, 0]
        n = k.shape[0]
        return self.k[layer][:n, :, :self.end], self.v[layer][:n, :, :self.end]

    def mask(self, T: int, key_mask, window: int | None, device):
        return self.masks[window]

    def advance(self, n: int) -> None:
        pass  # lengths move in end_decode, outside the (possibly compiled) forward


def _grow(need: int, have: int) -> int:
    return have if need <= have else max(need, 2 * have)


def _trim_heap() -> None:
    """glibc keeps freed blocks below its mmap threshold (which rises to 32 MB as big blocks are
    freed) in the process's heap: without a trim the memory is free for Python but not for the
    rest of the machine."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
