"""Synthetic-data generation speed.

1. Self-Instruct with the bundled model: growing --n instructions (with their instances) through
   the engine's continuous batching (Teacher over LocalBackend) against the same model one request
   at a time (LocalBackend(max_batch=1): continue_text and chat both send one prompt per engine
   call). Same prompts, same per-request seeds, no cache; both runs' instructions are compared.
2. The ROUGE-L novelty filter (lmlab.synth.novelty.NoveltyFilter, threshold 0.7) over --pool
   instructions, against the brute-force way (rouge-score's RougeScorer against every kept one)
   timed on the first --brute instructions; brute force's time for the whole pool is its time per
   comparison on the subset times the comparisons it would make (each instruction against every
   instruction kept before it; the decisions are the same).
   Instructions: the 100 AlpacaEval instructions and the 175 Self-Instruct seed tasks
   (../shared/data), plus light perturbations of them (word drops, swaps, synonyms, prefixes,
   and recombined halves), so both near-duplicates and novel ones occur.

    .venv/bin/python benchmarks/synth_speed.py                 # n=500, pool 10,000
    .venv/bin/python benchmarks/synth_speed.py --n 16 --pool 2000 --brute 300   # short
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

SHARED = next((p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()),
              Path(__file__).resolve().parents[2] / "shared" / "data")  # ../shared beside the checkout
PREFIXES = ["", "", "Please ", "Briefly ", "Can you ", "In one paragraph, ", "For a child, ", "Step by step, "]
SYNONYMS = {"write": "compose", "give": "provide", "list": "enumerate", "explain": "describe", "make": "create",
            "find": "identify", "good": "great", "some": "several", "best": "top", "how": "in what way"}


def base_instructions() -> list[str]:
    rows = [json.loads(x) for x in (SHARED / "alpacaeval_outputs_sample.jsonl").read_text().splitlines() if x.strip()]
    seeds = [json.loads(x) for x in (SHARED / "self_instruct_seed_tasks.jsonl").read_text().splitlines() if x.strip()]
    return sorted({r["instruction"].strip() for r in rows}) + [s["instruction"].strip() for s in seeds]


def perturb(text: str, other: str, rng: random.Random) -> str:
    w = text.split()
    kind = rng.random()
    if kind < 0.25 and len(w) > 3:  # drop a few words
        w = [x for x in w if rng.random() > 0.15] or w
    elif kind < 0.45 and len(w) > 2:  # swap two words
        i, j = rng.sample(range(len(w)), 2)
        w[i], w[j] = w[j], w[i]
    elif kind < 0.7:  # synonyms
        w = [SYNONYMS.get(x.lower(), x) if rng.random() < 0.7 else x for x in w]
    else:  # recombine: this one's start, another's end
        o = other.split()
        w = w[: max(1, len(w) // 2)] + o[len(o) // 2:]
    return (rng.choice(PREFIXES) + " ".join(w)).strip()


def pool(n: int, seed: int = 0) -> list[str]:
    base = base_instructions()
    rng = random.Random(seed)
    out = list(base)
    while len(out) < n:
        src = rng.choice(out)  # perturbing perturbations drifts further from the originals
        out.append(perturb(src, rng.choice(base), rng))
    rng.shuffle(out)
    return out[:n]


def bench_generate(args):
    from lmlab.judge.backends import LocalBackend
    from lmlab.lm import load
    from lmlab.synth.records import Output
    from lmlab.synth.self_instruct import generate, read_seeds
    from lmlab.synth.teacher import Teacher

    lm = load(None)
    seeds = read_seeds(SHARED / "self_instruct_seed_tasks.jsonl")
    Teacher(LocalBackend(lm, cache=None, progress=False)).continue_text(["Task 1:"] * 2, 4)  # warm-up: not timed
    rows, outs = [], {}
    tmp = Path(args.tmp)
    for name, mb in (("engine batching", None), ("one request at a time", 1)):
        teacher = Teacher(LocalBackend(lm, cache=None, max_batch=mb, progress=False))
        out = Output(tmp / f"synth_speed_{mb or 'batched'}.jsonl", overwrite=True)
        t0 = time.perf_counter()
        summary = generate(teacher, seeds, args.n, out, batch=args.batch, seed=0, max_tokens=args.max_tokens,
                           progress=False)
        dt = time.perf_counter() - t0
        out.close()
        outs[name] = [r["instruction"] for r in out.records]
        rows.append({"teacher": name, "kept": summary["kept"], "generated": summary["generated"],
                     "seconds": round(dt, 1), "instructions/s": round(summary["kept"] / dt, 2)})
    a, b = outs.values()
    same = sum(x == y for x, y in zip(a, b))
    return rows, rows[1]["seconds"] / rows[0]["seconds"], same, len(a)


def bench_novelty(args):
    from rouge_score import rouge_scorer

    from lmlab.synth.novelty import NoveltyFilter

    texts = pool(args.pool)
    f = NoveltyFilter(0.7)
    t0 = time.perf_counter()
    brute_pairs = 0  # what brute force would compare: each instruction against every one kept before it
    kept = []
    for t in texts:
        brute_pairs += len(kept)
        if f.add(t):
            kept.append(t)
    ours = time.perf_counter() - t0
    # the same decisions on the subset, brute force
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sub, bk, compared = texts[: args.brute], [], 0
    t0 = time.perf_counter()
    for t in sub:
        compared += len(bk)
        if all(scorer.score(k, t)["rougeL"].fmeasure < 0.7 for k in bk):
            bk.append(t)
    brute = time.perf_counter() - t0
    f2 = NoveltyFilter(0.7)
    same = [t for t in sub if f2.add(t)] == bk
    # brute force's time for the pool: its time per comparison on the subset x the comparisons it would make
    est = brute / max(1, compared) * brute_pairs
    rows = [{"filter": "lmlab NoveltyFilter (inverted index + LCS bound)", "instructions": len(texts),
             "kept": len(kept), "exact LCS": f.exact_comparisons, "seconds": round(ours, 2)},
            {"filter": f"rouge-score brute force, timed on {len(sub)}", "instructions": len(sub), "kept": len(bk),
             "exact LCS": compared, "seconds": round(brute, 2)},
            {"filter": f"rouge-score brute force, extrapolated to {len(texts)}",
             "instructions": len(texts), "kept": len(kept), "exact LCS": brute_pairs, "seconds": round(est, 1)}]
    return rows, est / ours, ours, same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="Self-Instruct records to generate per run")
    ap.add_argument("--batch", type=int, default=32, help="task prompts per Self-Instruct round")
    ap.add_argument("--max-tokens", type=int, default=48, help="tokens per generated task")
    ap.add_argument("--pool", type=int, default=10_000, help="instructions for the novelty filter")
    ap.add_argument("--brute", type=int, default=1000, help="instructions brute force is timed on")
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--tmp", default="runs/synth_speed")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmlab.report.table import print_table

    if not args.skip_generate:
        rows, ratio, same, n = bench_generate(args)
        print_table(rows, title=f"Self-Instruct, {args.n} records, bundled SmolLM2-135M, {args.batch} prompts a round")
        print(f"batched vs one at a time: {ratio:.2f}x (goal >= 5x at n=500); same instruction at {same} of {n} "
              "positions (batched sampling with per-request seeds may still differ in the last bits)")
    rows, ratio, ours, same = bench_novelty(args)
    print_table(rows, title="ROUGE-L novelty filter, threshold 0.7")
    print(f"lmlab filter over {args.pool} instructions: {ours:.1f} s (goal < 60 s); ~{ratio:.0f}x less than "
          f"brute-force rouge-score (extrapolated); same decisions as rouge-score on the subset: {same}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import _results

    sys.exit(_results.run(main))
