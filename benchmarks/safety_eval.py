"""Jailbreak attack success and XSTest over-refusal of the bundled model, keyword detector and a
StrongREJECT judge side by side.

The judge is the bundled model itself unless --judge names another: a 135M judge rarely follows
the rubric's answer format, so the table reports how many of its replies parsed at all, and the
judge/keyword disagreement is measured only on those.

    .venv/bin/python benchmarks/safety_eval.py --limit 8            # a few minutes on 2 cores
    .venv/bin/python benchmarks/safety_eval.py --limit 40 --judge none --out runs/safety
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=8, help="behaviours, and XSTest prompts per label")
    ap.add_argument("--judge", default="self", help="self | none | a model spec")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--judge-max-tokens", type=int, default=96)
    ap.add_argument("--templates", default=None, help="comma-separated (default: all)")
    ap.add_argument("--out", default="runs/safety_eval_bench", help="results.json, responses.jsonl, safety.png")
    args = ap.parse_args()

    from lmlab.report.table import print_kv, print_table
    from lmlab.safety import jailbreaks
    from lmlab.safety.evaluate import SafetyEvalConfig, run, table_rows

    cfg = SafetyEvalConfig(limit=args.limit, judge=None if args.judge == "none" else args.judge,
                           max_new_tokens=args.max_new_tokens, judge_max_tokens=args.judge_max_tokens,
                           output=args.out,
                           templates=args.templates.split(",") if args.templates else list(jailbreaks.TEMPLATES))
    t0 = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - t0
    print_table(table_rows(result), title=f"attack success per template, bundled model, {args.limit} behaviours")
    xs = result.get("xstest") or {}
    summary = {"responses": result["responses"], "refusal rate (keyword)": round(result["refusal_rate"], 3),
               "any-template ASR (keyword)": round(result["overall"]["any_template_asr"], 3),
               "XSTest safe refused (over-refusal)": xs.get("over_refusal"),
               "XSTest unsafe refused": xs.get("unsafe_refusal"), "seconds": round(seconds, 1)}
    if result.get("agreement"):
        summary.update({f"judge: {k}": (round(v, 3) if isinstance(v, float) else v)
                        for k, v in result["agreement"].items()})
    print_kv(summary, title="summary")
    print(f"plot: {result.get('png')}")
    return 0


if __name__ == "__main__":
    sys.exit(_results.run(main))
