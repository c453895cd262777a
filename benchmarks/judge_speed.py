"""LLM-as-judge and arena speed.

1. Judging pairs in both orders (2 judgments per pair) with the bundled model: all judgments
   through the engine's continuous batching (lmlab.judge.backends.LocalBackend) against the same
   model one request at a time (max_batch=1). Pairs are real AlpacaEval outputs
   (../shared/data/alpacaeval_outputs_sample.jsonl), answers cut to --answer-chars, greedy
   judgments of --judge-tokens tokens, no cache. Both runs' verdicts are compared.
2. The arena fit: Bradley-Terry with --rounds bootstrap rounds over --battles simulated battles
   (10 models), against Chatbot Arena's way (scikit-learn LogisticRegression on duplicated rows,
   once per round; timed over --sklearn-rounds rounds and scaled).

    .venv/bin/python benchmarks/judge_speed.py           # 200 pairs, 10,000 battles x 1,000 rounds
    .venv/bin/python benchmarks/judge_speed.py --quick   # 24 pairs, the same arena fit
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacaeval_outputs_sample.jsonl"


def pairs(n: int, chars: int) -> list[dict]:
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    by = {}
    for r in rows:
        by.setdefault(r["generator"], {})[r["instruction"]] = r["output"][:chars]
    gens = sorted(by)
    out = []
    for k, instr in enumerate(sorted(by[gens[0]])):
        for i in range(len(gens)):
            for j in range(i + 1, len(gens)):
                out.append({"question": instr, "answer_a": by[gens[i]][instr], "answer_b": by[gens[j]][instr],
                            "model_a": gens[i], "model_b": gens[j], "question_id": k})
    return out[:n]


def bench_judge(args):
    from lmlab.judge.backends import LocalBackend
    from lmlab.judge.grading import judge_pairs
    from lmlab.lm import load

    lm = load(None)
    ps = pairs(args.pairs, args.answer_chars)
    rows, verdicts = [], {}
    for name, batch in (("engine batching", None), ("one request at a time", 1)):
        backend = LocalBackend(lm, cache=None, max_batch=batch, progress=False)
        t0 = time.perf_counter()
        out = judge_pairs(backend, ps, max_tokens=args.judge_tokens)
        dt = time.perf_counter() - t0
        verdicts[name] = [(r["g1"], r["g2"]) for r in out]
        rows.append({"judge": name, "pairs": len(ps), "judgments": 2 * len(ps), "seconds": round(dt, 1),
                     "judgments/s": round(2 * len(ps) / dt, 2),
                     "parse failures": sum((g1 is None) + (g2 is None) for g1, g2 in verdicts[name])})
        print(f"{name}: {dt:.1f} s", file=sys.stderr, flush=True)
    same = sum(a == b for a, b in zip(*verdicts.values()))
    return rows, rows[1]["seconds"] / rows[0]["seconds"], same, len(ps)


def simulate(n: int, models: int, seed: int = 0) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    strength = np.linspace(1200, 800, models)
    out = []
    for _ in range(n):
        i, j = rng.choice(models, 2, replace=False)
        pa = 1 / (1 + 10 ** ((strength[j] - strength[i]) / 400))
        u = rng.random()
        w = "tie" if u < 0.1 else "model_a" if u < 0.1 + 0.9 * pa else "model_b"
        out.append({"model_a": f"m{i}", "model_b": f"m{j}", "winner": w})
    return out


def sklearn_round(a, b, w, p, rng):
    """One bootstrap round as Chatbot Arena computes it (battle arrays encoded once beforehand)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    idx = rng.integers(0, len(a), len(a))
    n = len(idx)
    a2, b2, w2 = np.tile(a[idx], 2), np.tile(b[idx], 2), np.tile(w[idx], 2)
    X = np.zeros((2 * n, p))
    X[np.arange(2 * n), a2] = math.log(10)
    X[np.arange(2 * n), b2] = -math.log(10)
    y = (w2 == 0).astype(float)
    tie = w2 == 2
    tie[n:] = False  # one copy of a tie is a win for a, the other for b
    y[tie] = 1.0
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-6).fit(X, y)
    return 400 * lr.coef_[0] + 1000


def bench_arena(args):
    import numpy as np

    from lmlab.arena.ratings import ratings

    battles = simulate(args.battles, 10)
    t0 = time.perf_counter()
    res = ratings(battles, bootstrap=args.rounds)
    ours = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    models = sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})
    ix = {m: k for k, m in enumerate(models)}
    a = np.array([ix[b["model_a"]] for b in battles])
    b = np.array([ix[b["model_b"]] for b in battles])
    w = np.array([{"model_a": 0, "model_b": 1}.get(b["winner"], 2) for b in battles])
    t0 = time.perf_counter()
    for _ in range(args.sklearn_rounds):
        sklearn_round(a, b, w, len(models), rng)
    per = (time.perf_counter() - t0) / args.sklearn_rounds
    widths = [v["upper"] - v["lower"] for v in res["ratings"].values()]
    rows = [{"fit": "lmlab (count matrices, batched Newton)", "battles": args.battles, "rounds": args.rounds,
             "seconds": round(ours, 2), "mean CI width": round(float(np.mean(widths)), 1)},
            {"fit": f"sklearn per round x {args.rounds} (timed over {args.sklearn_rounds})",
             "battles": args.battles, "rounds": args.rounds, "seconds": round(per * args.rounds, 1)}]
    return rows, per * args.rounds / ours, ours


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--answer-chars", type=int, default=600, help="each answer cut to this many characters")
    ap.add_argument("--judge-tokens", type=int, default=48, help="tokens per judgment")
    ap.add_argument("--battles", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--sklearn-rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="24 pairs, 24-token judgments, 5 sklearn rounds")
    ap.add_argument("--skip-judge", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.judge_tokens, args.sklearn_rounds = 24, 24, 5
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmlab.report.table import print_table

    import torch

    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)
    if not args.skip_judge:
        rows, ratio, same, n = bench_judge(args)
        print_table(rows, title=f"judging {n} pairs in both orders, bundled SmolLM2-135M, "
                                f"{args.judge_tokens}-token judgments")
        print(f"batched vs one at a time: {ratio:.2f}x (goal >= 5x); identical verdicts on {same} of {n} pairs")
    rows, ratio, ours = bench_arena(args)
    print_table(rows, title="arena fit: Bradley-Terry + bootstrap")
    print(f"lmlab arena fit: {ours:.2f} s (goal < 10 s); {ratio:.0f}x faster than a scikit-learn fit per round")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import _results

    sys.exit(_results.run(main))
