"""A preallocated key/value cache: one buffer per layer, filled left to right.

Preallocation avoids a torch.cat per layer per token, which dominates small-model decoding.
"""

from __future__ import annotations

import torch

from lmlab.model.config import ModelConfig


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

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep/duplicate batch rows (beam search, n samples per prompt)."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]
