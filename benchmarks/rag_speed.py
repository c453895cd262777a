"""Retrieval speed: indexing throughput (passages/s) and query latency p50/p99 at 10k and 100k
chunks, lmlab's BM25 (bm25s inside) against rank_bm25, and lmlab's dense search (faiss flat, IVF,
HNSW) against a plain numpy search; embedding throughput, lmlab's loader against
sentence-transformers, on the same passages.

    .venv/bin/python benchmarks/rag_speed.py --sizes 10000,100000 --queries 50
    .venv/bin/python benchmarks/rag_speed.py --quick       # 2,000 and 10,000 chunks

Corpus: synthetic passages of three sentences drawn (seeded) from the SQuAD dev paragraphs in
../shared/data, so the vocabulary and lengths are real text's. BM25 indexing is timed end to end:
lmlab's from the JSONL file (reading, chunking with the model's tokenizer, bm25s), rank_bm25's
from pre-split tokens. Dense: embedding a 2 CPU-core machine cannot do for 100k chunks in a
benchmark's time, so embedding throughput is measured on a sample and the search indexes hold
vectors mixed from real passage embeddings (two real vectors plus noise, renormalised) - search
cost depends on the count and dimension, not on where the vectors came from. Query latency is
the search alone (the query's embedding is timed on its own row). Recall@10 of IVF/HNSW is
against the exact (flat) result.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50 ms": float(np.percentile(ms, 50)), "p99 ms": float(np.percentile(ms, 99))}


def corpus(n: int, seed: int = 0) -> list[str]:
    texts = [json.loads(line)["text"] for line in open(DATA / "squad_dev_passages.jsonl")]
    sentences = [s for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if len(s) > 20]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, 3)) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--quick", action="store_true", help="sizes 2000,10000 and 20 queries")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--embed-sample", type=int, default=256, help="passages embedded to time embedding")
    ap.add_argument("--skip-rank-bm25-above", type=int, default=200000)
    args = ap.parse_args()
    sizes = [2000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    n_queries = 20 if args.quick else args.queries

    import bm25s
    import faiss
    from rank_bm25 import BM25Okapi

    from lmlab.rag import Index, IndexConfig
    from lmlab.rag.embed import Embedder
    from lmlab.rag.index import bm25_tokens
    from lmlab.report.table import print_table

    questions = [json.loads(line)["question"] for line in open(DATA / "squad_dev_rag.jsonl")][:n_queries]

    # ---- embedding throughput ----
    sample = corpus(args.embed_sample, seed=1)
    ours = Embedder()
    ours(sample[:8])
    t0 = time.perf_counter()
    base = ours(sample)
    ours_s = time.perf_counter() - t0
    embed_rows = [{"embedder": "lmlab Embedder (transformers)", "passages/s": len(sample) / ours_s}]
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(ours.folder), device="cpu")
        st.encode(sample[:8])
        t0 = time.perf_counter()
        ref = st.encode(sample, batch_size=64, normalize_embeddings=True)
        st_s = time.perf_counter() - t0
        embed_rows.append({"embedder": "sentence-transformers", "passages/s": len(sample) / st_s,
                           "max |diff|": float(np.abs(ref - base).max())})
    except ImportError:
        st = None
    qtimes = []
    for q in questions:
        t0 = time.perf_counter()
        ours([q])
        qtimes.append(time.perf_counter() - t0)
    embed_rows.append({"embedder": "lmlab, one query", **percentiles(qtimes)})
    print_table(embed_rows, title=f"all-MiniLM-L6-v2 embedding, {len(sample)} passages")
    qvecs = ours(questions)

    for n in sizes:
        texts = corpus(n)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.jsonl"
            path.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
            t0 = time.perf_counter()
            index, rep = Index.build([path], None, IndexConfig(dense="none", chunk_tokens=256, overlap=32))
            build_s = time.perf_counter() - t0
        times = []
        for q in questions:
            t0 = time.perf_counter()
            index.search_bm25(q, 10)
            times.append(time.perf_counter() - t0)
        ours_p = percentiles(times)
        rows.append({"system": "lmlab BM25 (bm25s)", "chunks": len(index), "index passages/s": n / build_s,
                     **ours_p, "queries/s": len(times) / sum(times)})
        tokens = [bm25_tokens(t) for t in texts]
        t0 = time.perf_counter()
        bm25s.BM25(method="lucene").index(tokens, show_progress=False)
        rows.append({"system": "  its bm25s index alone, from the same tokens as rank_bm25", "chunks": n,
                     "index passages/s": n / (time.perf_counter() - t0)})
        if n <= args.skip_rank_bm25_above:
            t0 = time.perf_counter()
            rb = BM25Okapi(tokens)
            rb_build = time.perf_counter() - t0
            times = []
            for q in questions:
                t0 = time.perf_counter()
                s = rb.get_scores(bm25_tokens(q))
                np.argpartition(-s, 10)[:10]
                times.append(time.perf_counter() - t0)
            rows.append({"system": "rank_bm25 BM25Okapi", "chunks": n, "index passages/s": n / rb_build,
                         **percentiles(times), "queries/s": len(times) / sum(times)})
            rows[0]["query speedup"] = rows[-1]["p50 ms"] / rows[0]["p50 ms"]

        # dense: vectors mixed from real embeddings
        rng = np.random.default_rng(0)
        i, j = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
        vecs = base[i] + 0.5 * base[j] + 0.05 * rng.standard_normal((n, base.shape[1])).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = vecs.astype(np.float32)
        times = []
        exact = []
        for q in qvecs:
            t0 = time.perf_counter()
            s = vecs @ q
            top = np.argpartition(-s, 10)[:10]
            top = top[np.argsort(-s[top])]
            times.append(time.perf_counter() - t0)
            exact.append(set(top.tolist()))
        rows.append({"system": "numpy exact (V @ q, argpartition)", "chunks": n, **percentiles(times),
                     "queries/s": len(times) / sum(times)})
        numpy_p50 = rows[-1]["p50 ms"]
        from lmlab.rag.index import _faiss_index

        for kind in ("flat", "ivf", "hnsw"):
            faiss.omp_set_num_threads(2)  # building uses the machine's 2 cores
            t0 = time.perf_counter()
            fi = _faiss_index(vecs, IndexConfig(dense=kind))
            build = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)  # one query at a time, as a user asks them
            times, recall = [], 0.0
            for q, ex in zip(qvecs, exact):
                t0 = time.perf_counter()
                _, ids = fi.search(q.reshape(1, -1), 10)
                times.append(time.perf_counter() - t0)
                recall += len(ex & set(ids[0].tolist())) / 10
            p = percentiles(times)
            rows.append({"system": f"lmlab dense faiss {kind}", "chunks": n, "index passages/s": n / build,
                         **p, "queries/s": len(times) / sum(times), "recall@10 vs exact": recall / len(qvecs),
                         "query speedup": numpy_p50 / p["p50 ms"]})
        print_table(rows, title=f"{n} chunks, {len(questions)} queries (one at a time, 1 thread)")
    return 0


if __name__ == "__main__":
    import _results

    sys.exit(_results.run(main))
