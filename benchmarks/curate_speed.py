"""lmlab data curate against datatrove on the same documents and the same steps: exact dedup,
MinHash near dedup (word 5-grams, 14 bands x 8), Gopher + C4 filters.

Both run end to end on one core (read JSONL, the step, write JSONL): lmlab as
`curate(steps=[...], workers=1)`, datatrove as its own pipeline stages under
LocalPipelineExecutor(tasks=1, workers=1). Prints MB/s per core for each, the ratio, and the
agreement of the kept sets (the share of documents both keep or both drop). Then the peak
memory of near dedup at three corpus sizes, each in a fresh process (peak RSS), and for lmlab
the peak heap of its dedup stages (signatures -> buckets -> clusters) alone.

The corpus: lines of ../shared/data/webtext_sample.jsonl recombined into new pages (20-40 lines
each, so two pages rarely share a 5-gram), plus 10% exact copies and 10% near copies (2% of the
words changed), shuffled.

    .venv/bin/python benchmarks/curate_speed.py --docs 1000 --sizes 500,1000,2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
WEB = ROOT.parent / "shared" / "data" / "webtext_sample.jsonl"


def make_corpus(path: Path, n: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    lines = [ln for r in map(json.loads, WEB.open()) for ln in r["text"].splitlines() if ln.strip()]
    docs = []
    n_unique = int(n * 0.8)
    for i in range(n_unique):
        docs.append("\n".join(rng.sample(lines, rng.randint(20, 40))))
    for i in range(n - n_unique):
        src = docs[rng.randrange(n_unique)]
        if i % 2:
            docs.append(src)
        else:
            ws = src.split(" ")
            for j in rng.sample(range(len(ws)), max(1, len(ws) // 50)):
                ws[j] = rng.choice(ws)
            docs.append(" ".join(ws))
    rng.shuffle(docs)
    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": str(i), "text": d}, ensure_ascii=False) + "\n")
    return path.stat().st_size / 1e6


def run_lmlab(data: Path, steps: list[str], out: Path) -> tuple[float, set[str]]:
    from lmlab.data.config import CurateConfig
    from lmlab.data.pipeline import curate

    t0 = time.perf_counter()
    curate(CurateConfig(inputs=[str(data)], out=str(out), steps=steps, workers=1, progress=False, overwrite=True,
                        batch_size=1000))
    dt = time.perf_counter() - t0
    kept = {json.loads(line)["id"] for p in (out / "data").glob("*.jsonl") for line in p.open()}
    return dt, kept


def normalised_text(doc) -> bytes:
    """What lmlab's exact dedup compares: lowercased, whitespace runs as one space."""
    return " ".join(doc.text.split()).lower().encode("utf-8")


def run_datatrove(data: Path, step: str, work: Path) -> tuple[float, set[str]]:
    import logging

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from loguru import logger

    logger.remove()
    logging.disable(logging.WARNING)
    out = work / "out"

    def ex(pipeline, tasks=1, name="s"):
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / f"logs_{name}"))

    def reader():
        return JsonlReader(str(data.parent), glob_pattern=data.name, id_key="id")

    t0 = time.perf_counter()
    if step == "quality":
        from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

        ex([reader(), GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(),
            JsonlWriter(str(out), compression=None)]).run()
    elif step == "minhash":
        from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                              MinhashDedupSignature)
        from datatrove.pipeline.dedup.minhash import MinhashConfig
        from datatrove.utils.hashing import HashConfig

        # sha1: datatrove's xxhash path passes str to xxhash, which takes only bytes (xxhash 4)
        cfg = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"), num_buckets=14, hashes_per_bucket=8,
                            n_grams=5)
        ex([reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)], name="1").run()
        ex([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg)],
           tasks=cfg.num_buckets, name="2").run()
        ex([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=cfg)],
           name="3").run()
        ex([reader(), MinhashDedupFilter(input_folder=str(work / "remove")),
            JsonlWriter(str(out), compression=None)], name="4").run()
    else:
        from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                          ExactFindDedups)
        from datatrove.utils.hashing import HashConfig

        cfg = ExactDedupConfig(content_getter=normalised_text, hash_config=HashConfig(precision=64))
        ex([reader(), ExactDedupSignature(output_folder=str(work / "sigs"), config=cfg)], name="1").run()
        ex([ExactFindDedups(data_folder=str(work / "sigs"), output_folder=str(work / "dups"), config=cfg)],
           name="2").run()
        ex([reader(), ExactDedupFilter(data_folder=str(work / "dups"), config=cfg),
            JsonlWriter(str(out), compression=None)], name="3").run()
    dt = time.perf_counter() - t0
    kept = {json.loads(line)["id"] for p in out.glob("*.jsonl") for line in p.open()}
    return dt, kept


def signatures(data: Path) -> dict:
    """MinHash signatures alone (stage 1), lmlab's numpy code against datasketch's update_batch
    (also vectorised) on the same shingles: which is faster decides what lmlab uses."""
    import datasketch

    from lmlab.data.dedup import MinHashConfig, MinHasher, simplify

    texts = [json.loads(line)["text"] for line in data.open()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    h = MinHasher(MinHashConfig())
    t0 = time.perf_counter()
    for t in texts:
        h.signature(t)
    t_np = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts:
        ws = simplify(t)
        m = datasketch.MinHash(num_perm=112, seed=1)
        m.update_batch([" ".join(ws[i:i + 5]).encode("utf-8") for i in range(len(ws) - 4)])
    t_ds = time.perf_counter() - t0
    return {"docs": len(texts), "MB": round(mb, 2), "lmlab numpy MB/s": round(mb / t_np, 3),
            "datasketch MB/s": round(mb / t_ds, 3), "numpy / datasketch": round(t_ds / t_np, 2)}


def _hwm_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(kind: str, n: int, q) -> None:
    import tracemalloc

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "corpus.jsonl"
        make_corpus(data, n, seed=n)
        base = _hwm_mb()
        heap = None
        if kind == "lmlab":
            from lmlab.data import pipeline

            real = pipeline.dedup_phase

            def traced(*a, **k):
                nonlocal heap
                tracemalloc.start()
                try:
                    return real(*a, **k)
                finally:
                    heap = tracemalloc.get_traced_memory()[1] / 1e6
                    tracemalloc.stop()
            pipeline.dedup_phase = traced
            run_lmlab(data, ["minhash"], tmp / "out")
        else:
            with open(tmp / "datatrove.log", "a") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):
                run_datatrove(data, "minhash", tmp / "dt")
        peak = _hwm_mb()
        q.put({"peak_rss_mb": round(peak, 1), "rss_growth_mb": round(peak - base, 1),
               "dedup_heap_mb": round(heap, 3) if heap is not None else ""})


def memory(kind: str, n: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(kind, n, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1000, help="documents for the speed comparison")
    ap.add_argument("--sizes", default="500,1000,2000", help="corpus sizes (documents) for near-dedup memory")
    ap.add_argument("--quick", action="store_true", help="--docs 400 --sizes 200,400,800")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.sizes = 400, "200,400,800"
    from lmlab.report.table import print_table

    import datatrove.pipeline.dedup  # noqa: F401  imports before the clocks start, both sides
    import datatrove.pipeline.filters  # noqa: F401
    import lmlab.data.pipeline  # noqa: F401
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "in" / "corpus.jsonl"
        data.parent.mkdir()
        mb = make_corpus(data, args.docs)
        ours_steps = {"exact dedup": ["exact_dedup"], "minhash": ["minhash"], "gopher + c4": ["gopher", "c4"]}
        theirs_steps = {"exact dedup": "exact", "minhash": "minhash", "gopher + c4": "quality"}
        for name in ours_steps:
            t_ours, k_ours = run_lmlab(data, ours_steps[name], tmp / f"lm_{theirs_steps[name]}")
            with open(tmp / "datatrove.log", "a") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):  # its per-stage statistics
                t_dt, k_dt = run_datatrove(data, theirs_steps[name], tmp / f"dt_{theirs_steps[name]}")
            ids = {str(i) for i in range(args.docs)}
            agree = sum((i in k_ours) == (i in k_dt) for i in ids) / len(ids)
            rows.append({"step": name, "docs": args.docs, "MB": round(mb, 2),
                         "lmlab MB/s/core": round(mb / t_ours, 3), "datatrove MB/s/core": round(mb / t_dt, 3),
                         "speedup": round(t_dt / t_ours, 2), "lmlab kept": len(k_ours), "datatrove kept": len(k_dt),
                         "kept-set agreement": round(agree, 4)})
        sig = signatures(data)
    print_table(rows, title="curation speed, one core each (end to end: read, step, write)")
    print_table([sig], title="MinHash signatures (112 hashes, word 5-grams), one core")
    mem = []
    for n in [int(x) for x in args.sizes.split(",")]:
        for kind in ("lmlab", "datatrove"):
            mem.append({"docs": n, "tool": kind, **memory(kind, n)})
    print_table(mem, title="near dedup (MinHash) memory by corpus size, a fresh process each")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _results

    sys.exit(_results.run(main))
