"""Retrieval over an Index: BM25, dense, or both fused by reciprocal rank fusion; optional reranking.

Reciprocal rank fusion (Cormack, Clarke and Buettcher 2009): score(d) = sum over rankings of
1 / (k + rank(d)), ranks from 1, k = 60. It needs no score calibration between BM25 and cosines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lmlab.errors import LmlabError
from lmlab.rag.chunks import Chunk

MODES = ("bm25", "dense", "hybrid")


@dataclass
class Hit:
    chunk: Chunk
    score: float  # the ranking's score: BM25, cosine, RRF or the reranker's
    bm25: float | None = None  # component scores where known (the abstention rule reads them)
    dense: float | None = None

    @property
    def doc_id(self) -> str:
        return self.chunk.doc_id

    def to_dict(self) -> dict:
        d = {"doc_id": self.chunk.doc_id, "chunk_id": self.chunk.chunk_id, "score": self.score}
        if self.bm25 is not None:
            d["bm25"] = self.bm25
        if self.dense is not None:
            d["dense"] = self.dense
        return d


def rrf(rankings: list[list[int]], k: int = 60) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first) into one (id, fused score) list, best first; ties keep the
    order of first appearance."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking, 1):
            scores[i] = scores.get(i, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def retrieve(index, query: str, k: int = 5, mode: str = "hybrid",
             rerank: Callable[[str, list[str]], list[float]] | str | None = None,
             candidates: int | None = None) -> list[Hit]:
    """The k best chunks for `query`. `rerank`: a function (query, texts) -> scores applied to the
    fused candidates, or "dense" (exact cosines from the index's embedder: undoes IVF/HNSW's
    approximation and re-orders BM25 candidates by meaning)."""
    if mode not in MODES:
        raise LmlabError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    if k < 1:
        raise LmlabError(f"k must be >= 1 (got {k})")
    if mode != "bm25" and index.embedding_name is None:
        raise LmlabError(f"{index.folder}: a BM25-only index (built with dense=none): use mode bm25")
    n = candidates or (max(4 * k, 20) if mode == "hybrid" or rerank else k)
    bm25 = dict(index.search_bm25(query, n)) if mode != "dense" else {}
    qvec = index.embed_query([query])[0] if mode != "bm25" or rerank == "dense" else None
    dense = dict(index.search_dense(query, n, qvec)) if mode != "bm25" else {}
    if mode == "bm25":
        ranked = list(bm25.items())
    elif mode == "dense":
        ranked = list(dense.items())
    else:
        ranked = rrf([list(bm25), list(dense)])
    if rerank is not None and ranked:
        ids = [i for i, _ in ranked]
        if rerank == "dense":
            scores = (index.vectors[ids] @ qvec).tolist()
        elif callable(rerank):
            scores = list(rerank(query, [index.chunks[i].text for i in ids]))
        else:
            raise LmlabError(f"rerank={rerank!r}: expected 'dense' or a function (query, texts) -> scores")
        ranked = sorted(zip(ids, scores), key=lambda kv: -kv[1])
    return [Hit(index.chunks[i], float(s), bm25.get(i), dense.get(i)) for i, s in ranked[:k]]
