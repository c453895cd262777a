"""`curate(config)`: the steps over a corpus, in batches, on every core or on Ray; resumable.

Three phases, each over numbered batches of `batch_size` records read as a stream:
  A. map (in the workers): the per-record steps before dedup; each surviving record's exact-dedup
     key and MinHash band hashes (dedup stage 1, signatures);
  B. dedup (in this process): exact duplicates from the keys; near duplicates from the band
     hashes one band at a time (stage 2, buckets), then union-find (stage 3, clusters);
  C. map (in the workers): the steps after dedup (PII), then DIR/data/part-NNNNN.jsonl (or
     .parquet: one file per batch, then given one schema across the parts).
Every step is a pure function `(batch, step_config) -> (kept, [(record, reason)])`, the same on
either executor. Phase A and C results land in DIR/work/ one batch at a time, each file written
whole and renamed into place, a batch marked done last: a killed run started again with the same
command skips the finished batches and recomputes the rest, so no record is lost or written
twice. DIR/report.json marks a finished run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, deque
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lmlab.data import dedup, records as rec
from lmlab.data.config import DEFAULT_STEPS, CurateConfig
from lmlab.errors import LmlabError

DEDUP_STEPS = ("exact_dedup", "minhash")
BUCKET_ROWS = 2_000_000  # band hashes sorted in one pass of near dedup's bucket stage


def step_function(name: str):
    from lmlab.data.decontaminate import decontaminate
    from lmlab.data.language import language
    from lmlab.data.normalize import normalize
    from lmlab.data.pii import pii
    from lmlab.data.quality import c4, gopher
    from lmlab.data.toxicity import toxicity

    return {"normalize": normalize, "language": language, "gopher": gopher, "c4": c4, "toxicity": toxicity,
            "decontaminate": decontaminate, "pii": pii}[name]


def plan(cfg: CurateConfig) -> tuple[list[str], list[str], list[str]]:
    """(map steps before dedup, dedup steps, map steps after) among the enabled steps."""
    for s in cfg.steps:
        if s not in DEFAULT_STEPS:
            raise LmlabError(f"unknown step {s!r}; valid steps: {', '.join(DEFAULT_STEPS)}")
    if len(set(cfg.steps)) != len(cfg.steps):
        raise LmlabError(f"steps: each step may appear once, got {', '.join(cfg.steps)}")
    steps = [s for s in cfg.steps if getattr(cfg, s).enabled]
    where = [i for i, s in enumerate(steps) if s in DEDUP_STEPS]
    if not where:
        return steps, [], []
    if where != list(range(where[0], where[-1] + 1)):
        raise LmlabError(f"steps: the dedup steps ({', '.join(DEDUP_STEPS)}) must be next to each other, "
                         f"got {', '.join(steps)}")
    return steps[:where[0]], steps[where[0]:where[-1] + 1], steps[where[-1] + 1:]


# ---- the work of one batch (runs in a worker) -----------------------------------------------

_sizes: dict[int, tuple[str, int]] = {}


def _bytes(batch: list[dict]) -> int:
    """UTF-8 bytes of the texts; a text a step left alone is the same object, measured once."""
    total = 0
    for r in batch:
        t = r["text"]
        hit = _sizes.get(id(t))
        if hit is None or hit[0] is not t:
            hit = _sizes[id(t)] = (t, len(t.encode("utf-8")))
        total += hit[1]
    return total


def run_steps(batch: list[dict], names: list[str], cfg: CurateConfig):
    """Apply map steps in order: (kept, {step: [(record, reason)]}, {step: stats})."""
    removed, stats = {}, {}
    for name in names:
        t0, n_in, b_in = time.process_time(), len(batch), _bytes(batch)
        batch, gone = step_function(name)(batch, getattr(cfg, name))
        removed[name] = gone
        stats[name] = {"in": n_in, "out": len(batch), "bytes_in": b_in, "bytes_out": _bytes(batch),
                       "seconds": time.process_time() - t0}
    return batch, removed, stats


def map_batch(task: tuple) -> dict:
    """Phase A or C for one batch: the steps, plus dedup signatures in phase A."""
    k, batch, names, cfg, phase = task
    bytes_in = _bytes(batch)
    kept, removed, stats = run_steps(batch, names, cfg)
    out = {"k": k, "kept": kept, "removed": removed, "stats": stats, "bytes_in": bytes_in,
           "bytes_out": _bytes(kept), "n_in": len(batch)}
    _sizes.clear()
    if phase == "A":
        t0 = time.process_time()
        _, dd, _ = plan(cfg)
        keys = [dedup.exact_key(r["text"], cfg.exact_dedup.lowercase) for r in kept] if "exact_dedup" in dd else []
        out["keys"] = np.array(keys or [0] * len(kept), dtype=np.uint64)
        hasher = dedup.MinHasher(cfg.minhash)
        bands = [hasher.band_hashes(r["text"]) for r in kept] if "minhash" in dd else []
        out["bands"] = np.stack(bands) if bands else np.zeros((len(kept), cfg.minhash.bands), dtype=np.uint64)
        out["signature_seconds"] = time.process_time() - t0
    return out


# ---- executors -----------------------------------------------------------------------------

def run_local(tasks, workers: int):
    """Results in task order, with at most 2 x workers batches in flight (streaming)."""
    if workers <= 1:
        for t in tasks:
            yield map_batch(t)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        for t in tasks:
            pending.append(pool.apply_async(map_batch, (t,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def run_ray(tasks, workers: int):
    """The same batches through Ray Data: a dataset of batches per window, mapped by map_batch."""
    try:
        import ray
    except ImportError:
        raise LmlabError("--executor ray needs ray: pip install 'ray[data]'") from None
    import pickle

    if not ray.is_initialized():
        ray.init(num_cpus=workers or None, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    window = max(2, 4 * (workers or os.cpu_count() or 1))

    def work(row: dict) -> dict:
        return {"k": row["k"], "result": pickle.dumps(map_batch(pickle.loads(row["task"])))}

    buf: list = []

    def flush():
        ds = ray.data.from_items([{"k": t[0], "task": pickle.dumps(t)} for t in buf]).map(work)
        rows = sorted(ds.take_all(), key=lambda r: r["k"])
        buf.clear()
        return [pickle.loads(r["result"]) for r in rows]

    for t in tasks:
        buf.append(t)
        if len(buf) >= window:
            yield from flush()
    if buf:
        yield from flush()


# ---- the run folder ------------------------------------------------------------------------

def _fingerprint(cfg: CurateConfig, files: list[Path]) -> dict:
    c = asdict(cfg)
    for k in ("overwrite", "progress", "workers", "executor", "out", "examples"):
        c.pop(k)
    return {"config": c, "inputs": [[str(f.resolve()), f.stat().st_size, int(f.stat().st_mtime)] for f in files]}


def prepare_folder(cfg: CurateConfig, files: list[Path]) -> Path:
    out = Path(cfg.out)
    finished = (out / "report.json").is_file()
    if finished and not cfg.overwrite:
        raise LmlabError(f"{out}: holds a finished curation run (report.json); pass --overwrite to replace it, "
                         f"or choose another --out")
    fp = _fingerprint(cfg, files)
    plan_file = out / "work" / "plan.json"
    if cfg.overwrite or finished:
        for sub in ("data", "removed", "work"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for f in ("report.json", "report.html", "config.yaml"):
            (out / f).unlink(missing_ok=True)
    elif plan_file.is_file():
        if json.loads(plan_file.read_text()) != fp:
            raise LmlabError(f"{out}: holds an unfinished run with other inputs or settings; run the same "
                             f"command to resume it, or pass --overwrite to start again")
    elif out.is_dir() and any(out.iterdir()):
        raise LmlabError(f"{out}: not empty and not a curation run; choose another --out or pass --overwrite")
    (out / "work").mkdir(parents=True, exist_ok=True)
    _write_json(plan_file, fp)
    from lmlab.config import save_config

    save_config(cfg, out / "config.yaml")
    return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def _removed_rows(step: str, gone: list, extra=None) -> list[dict]:
    rows = []
    for r, reason in gone:
        row = {"step": step, "reason": reason, "where": r.get("_where")}
        if "_leaked" in r:
            row["leaked"] = r["_leaked"]
        if extra:
            row.update(extra(r))
        rows.append({**row, **rec.public(r)})
    return rows


def _save_map_result(folder: Path, res: dict, marker: str) -> None:
    """One batch's results; the marker file (its stats) is written last."""
    folder.mkdir(parents=True, exist_ok=True)
    for step, gone in res["removed"].items():
        if gone:
            rec.write_jsonl(folder / f"removed_{step}.jsonl", _removed_rows(step, gone))
    langs = Counter(r.get("language", "unknown") for r in res["kept"])
    pii, leaked = Counter(), Counter()
    for r in res["kept"]:
        pii.update(r.get("_pii", {}))
        leaked.update(r.get("contamination", []))
    for r, _ in res["removed"].get("decontaminate", []):
        leaked.update(r.get("_leaked", []))
    if marker == "A.json":
        rec.write_jsonl(folder / "kept.jsonl", res["kept"], keep_private=("_where",))
        _write_json(folder / "where.json", [r["_where"] for r in res["kept"]])  # for dedup's messages
        _save_npy(folder / "keys.npy", res["keys"])
        _save_npy(folder / "bands.npy", res["bands"])
    _write_json(folder / marker, {"stats": res["stats"], "n": len(res["kept"]), "n_in": res["n_in"],
                                  "bytes_in": res["bytes_in"], "bytes_out": res["bytes_out"], "languages": langs,
                                  "pii": pii, "leaked": leaked, "signature_seconds": res.get("signature_seconds", 0.0)})


def _read_kept(path: Path) -> list[dict]:
    return rec.read_jsonl(path)


# ---- phase B: dedup over every batch --------------------------------------------------------

def dedup_phase(work: Path, ks: list[int], cfg: CurateConfig, steps: list[str]) -> tuple[dict, dict]:
    """{(batch, row): (step, reason, extra)} for every record dedup removes, and step stats."""
    counts = [json.loads((work / f"{k:05d}" / "A.json").read_text())["n"] for k in ks]
    offsets = np.cumsum([0] + counts)
    total = int(offsets[-1])
    alive = np.ones(total, dtype=bool)
    removed: dict[int, tuple[str, str, dict]] = {}
    stats = {}

    def where_of(ids: set[int]) -> dict[int, str]:
        out, by_batch = {}, {}
        for g in ids:
            b = int(np.searchsorted(offsets, g, side="right") - 1)
            by_batch.setdefault(b, []).append(g)
        for b, gs in by_batch.items():
            wheres = json.loads((work / f"{ks[b]:05d}" / "where.json").read_text(encoding="utf-8"))
            for g in gs:
                out[g] = wheres[g - offsets[b]]
        return out

    for step in steps:
        t0 = time.process_time()
        n_in = int(alive.sum())
        if step == "exact_dedup":
            keys = np.concatenate([np.load(work / f"{k:05d}" / "keys.npy") for k in ks]) if ks else \
                np.empty(0, np.uint64)
            ids = np.flatnonzero(alive)
            _, first = np.unique(keys[ids], return_index=True)
            first_of = {}
            is_first = np.zeros(len(ids), dtype=bool)
            is_first[first] = True
            key_first = dict(zip(keys[ids[first]].tolist(), ids[first].tolist()))
            dups = ids[~is_first]
            for g in dups.tolist():
                first_of[g] = key_first[int(keys[g])]
            wheres = where_of(set(first_of.values()))
            for g, f in first_of.items():
                removed[g] = (step, f"exact duplicate of {wheres[f]}", {"duplicate_of": wheres[f]})
            alive[dups] = False
        else:
            pairs = []
            # stage 2, one band at a time and, past BUCKET_ROWS documents, one range of hash values
            # at a time: memory per pass is bounded, whatever the corpus size
            parts = max(1, -(-int(alive.sum()) // BUCKET_ROWS))
            for b in range(cfg.minhash.bands):
                for part in range(parts):
                    cols, idss = [], []
                    for j, k in enumerate(ks):
                        col = np.load(work / f"{k:05d}" / "bands.npy", mmap_mode="r")[:, b]
                        sel = alive[offsets[j]:offsets[j + 1]]
                        if parts > 1:
                            sel = sel & (col % np.uint64(parts) == part)
                        cols.append(np.asarray(col[sel]))
                        idss.append(np.flatnonzero(sel) + offsets[j])
                    pairs.append(dedup.band_pairs(np.concatenate(cols), np.concatenate(idss)))
            found = dedup.clusters(pairs)  # stage 3
            wheres = where_of({root for root, _ in found.values()})
            for g, (root, size) in found.items():
                removed[g] = (step, f"near duplicate (cluster of {size}, kept {wheres[root]})",
                              {"cluster": wheres[root], "cluster_size": size})
            alive[list(found)] = False
        stats[step] = {"in": n_in, "out": int(alive.sum()), "seconds": time.process_time() - t0}
    by_batch: dict[tuple[int, int], tuple] = {}
    for g, v in removed.items():
        b = int(np.searchsorted(offsets, g, side="right") - 1)
        by_batch[(ks[b], g - int(offsets[b]))] = v
    return by_batch, stats


# ---- the run ------------------------------------------------------------------------------

def curate(cfg: CurateConfig) -> dict:
    """Run the pipeline; returns the report (also DIR/report.json, DIR/report.html)."""
    if not cfg.inputs:
        raise LmlabError("curate: give at least one input file or folder")
    if not cfg.out:
        raise LmlabError("curate: give an output folder (--out DIR)")
    if cfg.batch_size < 1:
        raise LmlabError(f"batch_size must be at least 1, got {cfg.batch_size}")
    pre, dd, post = plan(cfg)
    files = rec.input_files(cfg.inputs)
    out = prepare_folder(cfg, files)
    work = out / "work"
    workers = cfg.workers or os.cpu_count() or 1
    execute = run_ray if cfg.executor == "ray" else run_local
    t_start = time.time()
    read_stats = rec.ReadStats()

    # phase A
    done_a = {int(p.parent.name) for p in work.glob("*/A.json")}
    ks: list[int] = []

    def tasks_a():
        stream = rec.read_records(files, cfg.text_field, cfg.skip_bad_rows, read_stats)
        for k, batch in enumerate(rec.batches(stream, cfg.batch_size)):
            ks.append(k)
            if k not in done_a:
                yield (k, batch, pre, cfg, "A")

    bar = _bar(cfg, "curate")
    for res in execute(tasks_a(), workers):
        _save_map_result(work / f"{res['k']:05d}", res, "A.json")
        bar.update(sum(len(g) for g in res["removed"].values()) + len(res["kept"]))
    bar.close()
    if not ks:
        raise LmlabError(f"no records in {', '.join(map(str, files))}")

    # phase B
    removed_by_dedup, dedup_stats = dedup_phase(work, ks, cfg, dd) if dd else ({}, {})

    # phase C
    done_c = {int(p.parent.name) for p in work.glob("*/C.json")}
    step_of = {}

    def tasks_c():
        for k in ks:
            if k in done_c:
                continue
            batch, gone = [], {s: [] for s in dd}
            for i, r in enumerate(_read_kept(work / f"{k:05d}" / "kept.jsonl")):
                hit = removed_by_dedup.get((k, i))
                if hit is None:
                    batch.append(r)
                else:
                    step, reason, extra = hit
                    gone[step].append(({**r, **{f"_{x}": v for x, v in extra.items()}}, reason))
            step_of[k] = gone
            yield (k, batch, post, cfg, "C")

    (out / "data").mkdir(exist_ok=True)
    for stale in (out / "data").glob("*.tmp"):  # a part a killed run was writing
        stale.unlink()
    write = rec.write_parquet if cfg.out_format == "parquet" else rec.write_jsonl
    for res in execute(tasks_c(), workers):
        k = res["k"]
        folder = work / f"{k:05d}"
        for step, gone in step_of.pop(k, {}).items():
            rows = _removed_rows(step, gone, lambda r: {x.lstrip("_"): r[x] for x in
                                                        ("_duplicate_of", "_cluster", "_cluster_size") if x in r})
            rec.write_jsonl(folder / f"removed_{step}.jsonl", rows)
        write(out / "data" / f"part-{k:05d}.{cfg.out_format}", res["kept"])
        _save_map_result(folder, res, "C.json")

    if cfg.out_format == "parquet":  # the parts were typed one batch at a time
        rec.unify_parquet([out / "data" / f"part-{k:05d}.parquet" for k in ks])

    # removed/STEP.jsonl from the batches, in order
    (out / "removed").mkdir(exist_ok=True)
    for step in pre + dd + post:
        parts = [work / f"{k:05d}" / f"removed_{step}.jsonl" for k in ks]
        tmp = out / "removed" / f"{step}.jsonl.tmp"
        with open(tmp, "wb") as f:
            for p in parts:
                if p.is_file():
                    with open(p, "rb") as src:
                        shutil.copyfileobj(src, f)
        os.replace(tmp, out / "removed" / f"{step}.jsonl")

    from lmlab.data.report import build_report, write_report

    report = build_report(out, ks, pre, dd, post, dedup_stats, read_stats, time.time() - t_start, cfg)
    write_report(out, report)
    return report


def _bar(cfg: CurateConfig, desc: str):
    from tqdm import tqdm

    return tqdm(desc=desc, unit=" records", disable=not cfg.progress, leave=False)
