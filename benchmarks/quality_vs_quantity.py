"""Quality over quantity (AlpaGasus) for the bundled model.

Data: ../shared/data/alpacaeval_outputs_sample.jsonl, real answers of three models of very
different quality (fields instruction, output, generator) to the same 100 instructions, plus
optionally --generated FILE (synthetic records, e.g. from `lmlab synth self-instruct`; their
`source` or `generator` field names the group). The instructions are split: --train-instructions
of them (all three answers each) make the training pool, --eval-prompts others are held out for
the comparison.

1. Filter: every training record is rated 0-5 by an AlpaGasus judge (lmlab.synth.alpagasus.rate):
   the bundled model by default, any OpenAI-compatible endpoint with --judge-url/--judge-model.
   The keep rate per generator at --threshold is the filter's test: one that works keeps the
   strong model's answers most.
2. SFT with LoRA (lmlab.train sft) of the bundled model on (a) all records, (b) the kept subset,
   (c) a random subset of (b)'s size, each for --epochs passes (the same steps per example seen);
   training time for each.
3. Comparison with the base model: greedy answers to the held-out prompts, judged pairwise in both
   orders (lmlab.judge.grading.judge_pairs) by the same judge; win rate (tie = half) with a
   bootstrap 95% interval (lmlab.judge.bias.bootstrap_ci); plus exact-match accuracy on the FLAN
   held-out clusters (lmlab.train.flan, classification and extraction).

What a 135M judge can and cannot tell: SmolLM2-135M-Instruct does not read an answer for
accuracy. Its ratings track surface features (length, formatting, the prompt's wording) and its
pairwise verdicts lean on position; with a handful of held-out prompts every interval is wide.
So with the default judge the keep rates say whether this judge separates the generators at all,
and the win rates only whether anything moved a lot. The experiment itself (AlpaGasus' claim) needs
a capable judge: pass --judge-url/--judge-model, and --full for the real sizes.

    .venv/bin/python benchmarks/quality_vs_quantity.py             # short: ~10-15 min on 2 cores
    .venv/bin/python benchmarks/quality_vs_quantity.py --full      # 80 training instructions, 20 held out
    .venv/bin/python benchmarks/quality_vs_quantity.py --judge-url http://HOST:8000/v1 --judge-model NAME
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


def read_jsonl(path) -> list[dict]:
    from lmlab.records import read_jsonl as rj

    return rj(path)


def split(args) -> tuple[list[dict], list[str]]:
    rows = read_jsonl(args.data)
    instructions = sorted({r["instruction"] for r in rows})
    random.Random(args.seed).shuffle(instructions)
    train_i = set(instructions[: args.train_instructions])
    held = instructions[args.train_instructions: args.train_instructions + args.eval_prompts]
    cut = args.answer_chars or None
    train = [{"instruction": r["instruction"], "input": "", "output": r["output"][:cut], "generator": r["generator"]}
             for r in rows if r["instruction"] in train_i]
    if args.generated:
        for r in read_jsonl(args.generated):
            train.append({"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"][:cut],
                          "generator": r.get("generator") or r.get("source") or "generated"})
    return train, held


def judge_backend(args, lm):
    from lmlab.judge.backends import EndpointBackend, LocalBackend

    if args.judge_url:
        return EndpointBackend(args.judge_url, args.judge_model, cache=None)
    return LocalBackend(lm, cache=None, progress=True)


def train_arm(name: str, records: list[dict], args) -> tuple[str, float, int]:
    from lmlab.config import load_config
    from lmlab.train.config import TrainConfig
    from lmlab.train.sft import sft

    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    data = out / "train.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("instruction", "input", "output")}) + "\n"
                            for r in records), encoding="utf-8")
    steps = max(1, round(args.epochs * len(records) / args.batch_size))  # the same passes over each arm's data
    cfg = load_config(TrainConfig, None, [f"lora.r={args.lora_r}", f"lora.alpha={2 * args.lora_r}"],
                      data=str(data), output=str(out), method="lora", max_steps=steps, batch_size=args.batch_size,
                      max_length=args.max_length, lr=args.lr, warmup_steps=min(2, steps - 1), schedule="cosine",
                      seed=args.seed)
    t0 = time.perf_counter()
    result = sft(cfg)
    return result["final"], time.perf_counter() - t0, steps


def answers(lm, prompts: list[str], max_tokens: int) -> list[str]:
    from lmlab.engine.params import SamplingParams

    outs = lm.engine.generate([lm.prompt_ids([{"role": "user", "content": p}]) for p in prompts],
                              SamplingParams(max_tokens=max_tokens, temperature=0.0))
    return [o.outputs[0].text for o in outs]


def win_rate(backend, prompts, cand, base, judge_tokens) -> tuple[float, float, float, int]:
    from lmlab.judge.bias import bootstrap_ci
    from lmlab.judge.grading import judge_pairs

    rows = judge_pairs(backend, [{"question": q, "answer_a": a, "answer_b": b, "model_a": "tuned", "model_b": "base",
                                  "question_id": i} for i, (q, a, b) in enumerate(zip(prompts, cand, base))],
                       max_tokens=judge_tokens)
    v = [{"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[r["winner"]] for r in rows if r["winner"] != "error"]
    est, lo, hi = bootstrap_ci(v)
    return 100 * est, 100 * lo, 100 * hi, len(rows) - len(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "alpacaeval_outputs_sample.jsonl"))
    ap.add_argument("--generated", default=None, help="extra synthetic records (JSONL, Alpaca fields)")
    ap.add_argument("--judge-url", default=None, help="an OpenAI-compatible endpoint for the judge")
    ap.add_argument("--judge-model", default=None)
    ap.add_argument("--threshold", type=float, default=4.5)
    ap.add_argument("--keep-top", type=float, default=0.0, help="instead of --threshold: keep this share of the "
                    "records, best rated first (ties in random order); for a judge whose ratings all fall below it")
    ap.add_argument("--train-instructions", type=int, default=16, help="instructions whose 3 answers are trained on")
    ap.add_argument("--eval-prompts", type=int, default=6, help="held-out instructions for the comparison")
    ap.add_argument("--answer-chars", type=int, default=800, help="answers cut to this many characters (0: whole)")
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over each arm's data")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--answer-tokens", type=int, default=64, help="tokens per held-out answer")
    ap.add_argument("--judge-tokens", type=int, default=8, help="tokens per pairwise verdict")
    ap.add_argument("--flan-eval", type=int, default=2, help="FLAN held-out records per family (0: skip)")
    ap.add_argument("--full", action="store_true", help="80 training instructions (240 records), 20 held out, "
                    "whole answers, 3 epochs, 256-token answers, 8 FLAN records per family")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/quality_vs_quantity")
    args = ap.parse_args()
    if args.full:
        args.train_instructions, args.eval_prompts, args.answer_chars, args.epochs = 80, 20, 0, 3.0
        args.max_length, args.answer_tokens, args.judge_tokens, args.flan_eval = 512, 256, 16, 8
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmlab.lm import load
    from lmlab.report.table import print_table
    from lmlab.synth.alpagasus import keep_rate_by, rate
    from lmlab.train.flan import accuracy, make_data

    train, held = split(args)
    base_lm = load(None)
    judge = judge_backend(args, base_lm)
    judge_name = args.judge_model or args.judge_url or "bundled SmolLM2-135M-Instruct"

    t0 = time.perf_counter()
    scores = rate(judge, train)
    rate_s = time.perf_counter() - t0
    keep_scores, rule = scores, f">= {args.threshold:g}"
    if args.keep_top:  # the top share by rating, ties in a reproducible random order
        order = sorted(range(len(train)), key=lambda i: (-(scores[i] if scores[i] is not None else -1),
                                                          random.Random(f"{args.seed}-{i}").random()))
        top = set(order[: max(1, round(args.keep_top * len(train)))])
        keep_scores = [scores[i] if i in top else None for i in range(len(train))]
        rule = f"top {100 * args.keep_top:.0f}%"
    kept = [{**r, "score": s} for r, s in zip(train, keep_scores)
            if s is not None and (args.keep_top or s >= args.threshold)]
    summary = {"kept": len(kept), "unparsed": sum(s is None for s in scores)}
    rates = {g: v for g, v in keep_rate_by(train, [0.0 if s is None else 1.0 for s in keep_scores] if args.keep_top
                                           else scores, 1.0 if args.keep_top else args.threshold, "generator").items()}
    rows = []
    for g, share in rates.items():
        s = [x for r, x in zip(train, scores) if r["generator"] == g and x is not None]
        rows.append({"generator": g, "records": sum(r["generator"] == g for r in train),
                     "mean rating": round(sum(s) / len(s), 2) if s else None, f"kept ({rule})":
                     f"{100 * share:.0f}%"})
    print_table(rows, title=f"AlpaGasus filter, judge {judge_name}: {summary['kept']} of {len(train)} kept, "
                            f"{summary['unparsed']} unparsed, rated in {rate_s:.0f} s")
    if args.keep_top and kept:
        cut = min(r["score"] for r in kept)
        tied = sum(s == cut for s, k in zip(scores, keep_scores) if k is None)
        if tied:
            print(f"{tied} dropped records have the same rating ({cut:g}) as the lowest kept: at the cut the choice "
                  "is random, so keep rates there say nothing about the judge")
    if len(kept) < args.batch_size:
        print(f"the filter kept {len(kept)} records, fewer than one batch: no filtered or random arm to train. "
              "A 135M judge often rates everything alike; try a stronger judge or a lower --threshold.")
        return 0
    rng = random.Random(args.seed)
    arms = {"(a) all": train, "(b) filtered": kept, "(c) random, same size": rng.sample(train, len(kept))}

    flan_held = make_data(1, ["classification", "extraction"], args.seed, args.flan_eval)[1] if args.flan_eval else []
    base_answers = answers(base_lm, held, args.answer_tokens)
    base_flan = accuracy(base_lm, flan_held)[0]["all"] if flan_held else None
    table = [{"model": "base", "records": 0, "steps": 0, "train s": 0, "win rate vs base (95% CI)": "",
              "FLAN held-out": "" if base_flan is None else f"{100 * base_flan:.0f}%"}]
    for name, records in arms.items():
        final, secs, steps = train_arm(name.split()[0].strip("()"), records, args)
        lm = load(final)
        ans = answers(lm, held, args.answer_tokens)
        wr, lo, hi, failed = win_rate(judge, held, ans, base_answers, args.judge_tokens)
        flan = accuracy(lm, flan_held)[0]["all"] if flan_held else None
        table.append({"model": name, "records": len(records), "steps": steps, "train s": round(secs, 1),
                      "win rate vs base (95% CI)": f"{wr:.0f}% [{lo:.0f}, {hi:.0f}]"
                      + (f" ({failed} unparsed)" if failed else ""),
                      "FLAN held-out": "" if flan is None else f"{100 * flan:.0f}%"})
        del lm
    print_table(table, title=f"LoRA SFT of SmolLM2-135M, {args.epochs:g} epoch(s) per arm; "
                             f"judged by {judge_name} on {len(held)} held-out prompts, both orders; "
                             f"FLAN: {len(flan_held)} held-out records")
    if not args.judge_url:
        print("Note: a 135M judge cannot check accuracy; its ratings and verdicts follow length, format and "
              "position. Read the keep rates as whether it separates the generators at all, and the win "
              "rates (wide intervals on few prompts) only as large effects or none. Use --judge-url for the claim.")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import _results

    sys.exit(_results.run(main))
