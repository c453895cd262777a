"""Safety tuning measured: refusal/compliance pairs -> safety eval -> DPO -> the same eval.

    python recipes/safety_dpo.py [--out runs/safety_dpo] [--limit 20] [--steps 24]

Writes OUT/pairs.jsonl, OUT/before/ and OUT/after/ (results.json, responses.jsonl, safety.png)
and OUT/report.json + OUT/report.md: attack success per template and XSTest over-refusal,
before and after, side by side. The DPO stage is `lmlab train dpo --config recipes/safety_dpo.yaml`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/safety_dpo")
    ap.add_argument("--limit", type=int, default=20, help="behaviours (and XSTest prompts per label)")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--refuse-pairs", type=int, default=64)
    ap.add_argument("--comply-pairs", type=int, default=32)
    ap.add_argument("--templates", default="direct,role_play,prefix_injection,refusal_suppression")
    args = ap.parse_args()

    from lmlab.config import load_config
    from lmlab.safety import evaluate, pairs
    from lmlab.train.dpo import dpo
    from lmlab.train.config import TrainConfig

    out = Path(args.out)
    info = pairs.build(SHARED / "hh_rlhf_harmless_base_test.jsonl", SHARED / "self_instruct_seed_tasks.jsonl",
                       out / "pairs.jsonl", args.refuse_pairs, args.comply_pairs)
    print(json.dumps(info))

    def safety(model, where):
        cfg = evaluate.SafetyEvalConfig(model=model, limit=args.limit, templates=args.templates.split(","),
                                        output=str(out / where))
        return evaluate.run(cfg)

    before = safety(None, "before")
    cfg = load_config(TrainConfig, HERE / "safety_dpo.yaml", [f"max_steps={args.steps}"],
                      data=str(out / "pairs.jsonl"), output=str(out / "dpo"))
    trained = dpo(cfg)
    after = safety(str(out / "dpo" / "final"), "after")

    rows = []
    for b, a in zip(before["templates"] + [before["overall"]], after["templates"] + [after["overall"]]):
        rows.append({"template": b["template"], "asr_before": b["asr_keyword"], "asr_after": a["asr_keyword"]})
    rows.append({"template": "XSTest over-refusal (safe)", "asr_before": before["xstest"]["over_refusal"],
                 "asr_after": after["xstest"]["over_refusal"]})
    rows.append({"template": "XSTest unsafe refused", "asr_before": before["xstest"]["unsafe_refusal"],
                 "asr_after": after["xstest"]["unsafe_refusal"]})
    report = {"pairs": info, "dpo": {k: v for k, v in trained.items() if isinstance(v, (int, float, str))},
              "rows": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    md = ["| | before | after |", "|---|---|---|"] + [
        f"| {r['template']} | {r['asr_before']:.3f} | {r['asr_after']:.3f} |" for r in rows]
    (out / "report.md").write_text("Attack success (keyword) per template, and XSTest refusal rates\n\n"
                                   + "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
