"""Preference learning on real data: Anthropic HH-RLHF (harmless-base test split), bundled model.

    python benchmarks/preference_hh.py [--rm-pairs 256] [--dpo-pairs 96] [--eval-pairs 200] ...

20% of the dialogues (a seeded shuffle) are held out. Pairs longer than --max-length tokens
(prompt + both answers, chat template applied) are left out on both sides, to fit a CPU budget.
- RM: a reward model trained on training pairs (default: a probe, method feature: the trunk
  frozen, a scalar head trained), held-out pair accuracy with a 95% Wilson interval;
- DPO with LoRA: held-out implicit-reward accuracy of the start (all ties: 0.5) and the end;
- PPO with LoRA against that reward model on training prompts: mean reward and KL (k1, per
  response) of samples for held-out prompts at the start and the end, with a KL target.
Each stage runs in its own process; its peak RSS is reported (with LoRA, the policy, reference,
value head and the probe reward model share one base model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl"


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def split(args, out: Path) -> dict:
    """Train and held-out pair files of short pairs, and the held-out prompts."""
    from lmlab.model.io.resolve import resolve
    from lmlab.tokenizer import Tokenizer
    from lmlab.train.preference import read_comparisons, tokenize

    tokenizer = Tokenizer.from_folder(resolve("smollm2"))
    comparisons = read_comparisons(HH, skip_bad_rows=True)
    random.Random(args.seed).shuffle(comparisons)
    cut = len(comparisons) * 4 // 5
    files = {}
    for name, part in (("train", comparisons[:cut]), ("held", comparisons[cut:])):
        rows = []
        for c in part:
            r = tokenize(c, tokenizer, 10 ** 6)
            if len(r.prompt) + sum(map(len, r.responses)) <= args.max_length:
                rows.append({"prompt": c.prompt, "chosen": c.responses[0], "rejected": c.responses[1]})
        files[name] = rows
    n_held = min(args.eval_pairs, len(files["held"]))
    paths = {"rm": files["train"][:args.rm_pairs], "dpo": files["train"][:args.dpo_pairs],
             "held": files["held"][:n_held], "ppo": files["train"]}
    for name, rows in paths.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"train_short": len(files["train"]), "held_short": len(files["held"]), "held_used": n_held}


def stage(name: str, work: Path, args) -> dict:
    from lmlab.config import load_config
    from lmlab.train import dpo, rl, rm
    from lmlab.train.config import TrainConfig

    common = dict(max_length=args.max_length, progress=False, seed=args.seed, batch_size=8,
                  eval_data=str(work / "held.jsonl"), output=str(work / name))
    if name == "rm":
        cfg = load_config(TrainConfig, None, None, data=str(work / "rm.jsonl"), method=args.rm_method, lr=args.rm_lr,
                          epochs=args.rm_epochs, **common)
        return rm.rm(cfg)
    if name == "dpo":
        cfg = load_config(TrainConfig, None, None, data=str(work / "dpo.jsonl"), method="lora", lr=1e-4,
                          epochs=1, **{**common, "batch_size": 4}, dpo={"beta": 0.1})
        return dpo.dpo(cfg)
    cfg = load_config(TrainConfig, None, None, data=str(work / "ppo.jsonl"), method="lora", lr=1e-4,
                      epochs=args.ppo_rollouts, **common, rm={"models": [str(work / "rm")]},
                      ppo={"rollout_size": 8, "max_new_tokens": args.max_new_tokens, "kl_coef": 0.05,
                           "kl_target": args.kl_target, "kl_horizon": 200, "eval_prompts": args.ppo_eval_prompts,
                           "ppo_epochs": 2})
    return rl.ppo(cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--rm-pairs", type=int, default=256)
    p.add_argument("--rm-method", default="feature", help="feature (a probe) | lora | full")
    p.add_argument("--rm-epochs", type=float, default=2)
    p.add_argument("--rm-lr", type=float, default=2e-3)
    p.add_argument("--dpo-pairs", type=int, default=96)
    p.add_argument("--eval-pairs", type=int, default=200)
    p.add_argument("--ppo-rollouts", type=int, default=4)
    p.add_argument("--ppo-eval-prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--kl-target", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default="rm,dpo,ppo")
    p.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one)")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="preference_hh_"))
    if args.stage:
        t0 = time.perf_counter()
        result = stage(args.stage, work, args)
        result.update(seconds=time.perf_counter() - t0, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("RESULT " + json.dumps(result), flush=True)
        return
    work.mkdir(parents=True, exist_ok=True)
    sizes = split(args, work)
    print(f"HH-RLHF harmless-base: {sizes['train_short']} training and {sizes['held_short']} held-out pairs of "
          f"<= {args.max_length} tokens; {sizes['held_used']} held-out pairs evaluated. Runs in {work}", flush=True)
    for name in args.stages.split(","):
        load = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--work", str(work), "--stage", name],
                              capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[7:])
        rows = [json.loads(l) for l in (work / name / "metrics.jsonl").read_text().splitlines()]
        where = f"{r['seconds']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB, load {load:.1f} -> {os.getloadavg()[0]:.1f}"
        if name == "rm":
            acc, n = r["eval_accuracy"], sizes["held_used"]
            lo, hi = wilson(acc * n, n)
            print(f"RM ({args.rm_method}, {args.rm_pairs} pairs): held-out accuracy {acc:.3f} "
                  f"(95% CI {lo:.3f}-{hi:.3f}, n={n}); {where}", flush=True)
        elif name == "dpo":
            acc, n = r["eval_accuracy"], sizes["held_used"]
            lo, hi = wilson(acc * n, n)
            print(f"DPO (LoRA, {args.dpo_pairs} pairs): held-out implicit-reward accuracy 0.500 at the start (ties) "
                  f"-> {acc:.3f} (95% CI {lo:.3f}-{hi:.3f}); {where}", flush=True)
        else:
            start, end = rows[0], rows[-1]
            print(f"PPO (LoRA, {args.ppo_rollouts} rollouts of 8 prompts): held-out mean reward "
                  f"{start['eval_reward']:.3f} -> {end['eval_reward']:.3f}, KL {start['eval_kl']:.2f} -> "
                  f"{end['eval_kl']:.2f} (target {args.kl_target}), length {start['eval_length']:.1f} -> "
                  f"{end['eval_length']:.1f}; {where}", flush=True)


if __name__ == "__main__":
    import _results

    _results.run(main)
