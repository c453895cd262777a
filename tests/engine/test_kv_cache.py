"""SlotCache memory follows the work: buffers grow for big requests and are given back when no
row is in use, while rows in use are never touched."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lmlab.engine.kv_cache import SlotCache

CONFIG = SimpleNamespace(n_layers=2, n_kv_heads=2, head_dim=8)


def test_release_and_idle_reserve_give_memory_back_but_keep_rows_in_use():
    cache = SlotCache(CONFIG)
    small = cache.nbytes
    cache.reserve(16, 2048)
    assert cache.nbytes == 2 * 2 * 16 * 2 * 2048 * 8 * 4
    cache.active = 1  # a row in use: nothing is released, and its keys survive
    cache.k[0][0, :, :5] = 1.0
    cache.lengths[0] = 5
    cache.release()
    cache.reserve(1, 10)
    assert cache.k[0].shape == (16, 2, 2048, 8) and cache.k[0][0, :, :5].eq(1).all()
    cache.active = 0
    cache.release()
    assert cache.nbytes == small and cache.lengths == [0]
    cache.reserve(16, 2048)
    cache.reserve(2, 100)  # idle and 4x too big: replaced by what is asked for
    assert cache.k[0].shape == (2, 2, 100, 8) and len(cache.lengths) == 2
    cache.reserve(2, 60)  # within 4x: kept, no reallocation for alternating sizes
    assert cache.k[0].shape == (2, 2, 100, 8)
    assert torch.equal(cache.k[1], torch.zeros_like(cache.k[1]))
