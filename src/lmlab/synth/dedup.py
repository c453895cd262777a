"""Near-duplicate removal for synthetic records, through the data stage's MinHash-LSH
(lmlab.data.dedup: FineWeb's word 5-grams, 14 bands of 8 hashes)."""

from __future__ import annotations


def near_duplicates(texts: list[str]) -> set[int]:
    """Indices of the texts to drop: every member of a near-duplicate cluster but its first."""
    import numpy as np

    from lmlab.data.dedup import MinHashConfig, MinHasher, band_pairs, clusters

    hasher = MinHasher(MinHashConfig())
    bands = np.stack([hasher.band_hashes(t) for t in texts])
    ids = np.arange(len(texts))
    return set(clusters([band_pairs(bands[:, b], ids) for b in range(bands.shape[1])]))
