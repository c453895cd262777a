"""LoRA SFT speed: lmlab vs TRL SFTTrainer + peft, side by side in one run.

The bundled model, the "chosen" dialogues of ../shared/data/hh_rlhf_harmless_base_test.jsonl as
chat messages, batch 4, max length 256, LoRA r=16 (alpha 32) on every linear layer, AdamW.
Each side runs in its own process (clean peak RSS); throughput is non-padding tokens per
second over the steps after the first two (warm-up excluded).

    python benchmarks/train_speed.py [--steps 12] [--examples 200]

Rows: lmlab as shipped (length-bucketed padding, loss on assistant turns, fp32 and bf16
autocast), lmlab with packing, and TRL (fp32; TRL computes the loss on every token of a
`messages` dataset, as SmolLM2's template has no generation markers for assistant-only loss).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl"
BATCH, MAX_LEN, R, ALPHA = 4, 256, 16, 32


def dialogues(n: int) -> list[dict]:
    from lmlab.train.preference import hh_to_messages

    rows = [json.loads(l) for l in DATA.read_text(encoding="utf-8").splitlines()[:n]]
    return [{"messages": hh_to_messages(r["chosen"])} for r in rows]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate(rows: list[dict]) -> float:
    """Tokens/s between the end of step 2 and the end of the last step."""
    a, b = rows[1], rows[-1]
    return (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"])


def run_lmlab(steps: int, n: int, variant: str, out: Path) -> dict:
    from lmlab.train.config import TrainConfig
    from lmlab.train.sft import sft

    data = out / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in dialogues(n)))
    cfg = TrainConfig(data=str(data), output=str(out / variant), max_steps=steps, batch_size=BATCH,
                      max_length=MAX_LEN, lr=1e-4, packing=variant == "packing", bf16=variant == "bf16",
                      progress=False, schedule="constant")
    cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout = R, ALPHA, 0.0
    sft(cfg)
    rows = [json.loads(l) for l in (out / variant / "metrics.jsonl").read_text().splitlines()]
    return {"tok_s": rate(rows), "loss": rows[-1]["loss"]}


def run_trl(steps: int, n: int, out: Path) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lmlab.model.io.resolve import resolve

    folder = resolve(None)
    marks = []

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs:
                marks.append((time.perf_counter(), logs["num_tokens"], logs.get("loss")))

    args = SFTConfig(output_dir=str(out / "trl"), per_device_train_batch_size=BATCH, max_length=MAX_LEN,
                     max_steps=steps, learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[],
                     use_cpu=True, lr_scheduler_type="constant", dataloader_num_workers=0, disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(folder, dtype="float32"), args=args,
                         train_dataset=datasets.Dataset.from_list(dialogues(n)),
                         processing_class=AutoTokenizer.from_pretrained(folder),
                         peft_config=LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"),
                         callbacks=[Clock()])
    trainer.train()
    (t1, n1, _), (t2, n2, loss) = marks[1], marks[-1]
    return {"tok_s": (n2 - n1) / (t2 - t1), "loss": loss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--out", default="/tmp/lmlab-train-speed")
    a = ap.parse_args()
    out = Path(a.out)
    if a.worker:
        out.mkdir(parents=True, exist_ok=True)
        r = run_trl(a.steps, a.examples, out) if a.worker == "trl" else run_lmlab(a.steps, a.examples, a.worker, out)
        print(json.dumps({**r, "peak_rss_mb": peak_rss_mb()}))
        return
    if not DATA.is_file():
        sys.exit(f"{DATA} is absent (it comes with ../shared)")
    from lmlab.report.table import print_table

    rows = []
    for worker, name in [("trl", "TRL SFTTrainer + peft (fp32)"), ("fp32", "lmlab (fp32)"),
                         ("bf16", "lmlab (bf16 autocast)"), ("packing", "lmlab (fp32, packing)")]:
        p = subprocess.run([sys.executable, __file__, "--worker", worker, "--steps", str(a.steps),
                            "--examples", str(a.examples), "--out", a.out], capture_output=True, text=True)
        if p.returncode:
            print(p.stderr[-2000:], file=sys.stderr)
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append({"run": name, "tokens/s": round(r["tok_s"], 1), "peak RSS MB": round(r["peak_rss_mb"]),
                     "last loss": round(r["loss"], 3)})
    base = rows[0]["tokens/s"] if rows and rows[0]["run"].startswith("TRL") else None
    for r in rows:
        r["vs TRL"] = f"{r['tokens/s'] / base:.2f}x" if base else "-"
    print_table(rows, title=f"LoRA SFT, bundled model, batch {BATCH}, max length {MAX_LEN}, r={R}, "
                            f"{a.steps} steps (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    import _results

    _results.run(main)
