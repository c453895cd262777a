"""DPO with LoRA on the bundled model: lmlab vs TRL's DPOTrainer (+ peft), same pairs.

    python benchmarks/dpo_speed.py [--pairs 200] [--batch-size 2] [--max-length 256]

The pairs are the first ones of ../shared/data/hh_rlhf_harmless_base_test.jsonl that fit in
max_length under the chat template, so neither side truncates. Both sides: fp32, LoRA r=16,
alpha 32, dropout 0.05 on all linear layers, beta 0.1, sigmoid loss, one epoch, the reference
being the adapter-disabled model, no gradient checkpointing (TRL's default turns it on; here it
is off on both sides). Each side runs in its own process so that peak RSS is its own; the timed
part is the training loop (trainer.train() / Trainer.fit()), loading and tokenising excluded.
Prints pairs/s and peak RSS side by side, the speed ratio, and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl"


def select_pairs(n: int, max_length: int, out: Path) -> Path:
    from lmlab.model.io.resolve import resolve
    from lmlab.tokenizer import Tokenizer
    from lmlab.train.preference import read_comparisons, tokenize

    tokenizer = Tokenizer.from_folder(resolve("smollm2"))
    rows = []
    for c in read_comparisons(HH, skip_bad_rows=True):
        r = tokenize(c, tokenizer, 10 ** 6)
        # one token to spare: TRL keeps the template's newline after the end-of-turn token
        if len(r.prompt) + max(map(len, r.responses)) < max_length:
            rows.append({"prompt": c.prompt, "chosen": [{"role": "assistant", "content": c.responses[0]}],
                         "rejected": [{"role": "assistant", "content": c.responses[1]}]})
        if len(rows) == n:
            break
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def run_ours(data: Path, args) -> dict:
    import torch

    from lmlab.config import load_config
    from lmlab.train import align
    from lmlab.train.config import TrainConfig
    from lmlab.train.objectives import dpo
    from lmlab.train.trainer import Trainer

    cfg = load_config(TrainConfig, None, None, data=str(data), output=tempfile.mkdtemp(), method="lora",
                      batch_size=args.batch_size, max_length=args.max_length, epochs=1, lr=5e-6, progress=False,
                      log_every=10 ** 6, lora={"r": 16, "alpha": 32, "dropout": 0.05}, bf16=args.bf16)
    d, model, tokenizer, folder, _ = align.start(cfg, "dpo")
    data = align.comparison_batches(cfg, tokenizer, cfg.data, dpo.collate)
    trainer = Trainer(model, dpo.DPO(0.1), data, cfg, None, d)
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    return {"steps": result["step"], "seconds": seconds, "threads": torch.get_num_threads()}


def run_trl(data: Path, args) -> dict:
    import datasets
    import peft
    import torch
    import transformers
    import trl

    from lmlab.model.io.resolve import resolve

    folder = resolve("smollm2")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    config = trl.DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size,
                           max_length=args.max_length, num_train_epochs=1, learning_rate=5e-6, beta=0.1,
                           report_to="none", use_cpu=True, bf16=args.bf16, save_strategy="no",
                           gradient_checkpointing=False, logging_steps=10 ** 6, disable_tqdm=True)
    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trl.DPOTrainer(model, args=config, processing_class=tokenizer, peft_config=lora,
                             train_dataset=datasets.load_dataset("json", data_files=str(data), split="train"))
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    return {"steps": result.global_step, "seconds": seconds, "threads": torch.get_num_threads()}


def side(name: str, data: Path, args) -> dict:
    out = (run_ours if name == "ours" else run_trl)(data, args)
    pairs = sum(1 for _ in data.open())
    out.update(pairs=pairs, pairs_per_s=pairs / out["seconds"],
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    p.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)  # one side, in a child process
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print("RESULT " + json.dumps(side(args.side, Path(args.data), args)), flush=True)
        return
    data = select_pairs(args.pairs, args.max_length, Path(tempfile.mkdtemp()) / "pairs.jsonl")
    results = {}
    for name in ("ours", "trl"):
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--side", name, "--data", str(data), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length)] + (["--bf16"] if args.bf16 else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = {**json.loads(line[7:]), "load_before": load, "load_after": os.getloadavg()[0]}
    print(f"DPO + LoRA, bundled SmolLM2-135M, {results['ours']['pairs']} HH-RLHF pairs, batch {args.batch_size}, "
          f"max length {args.max_length}, {'bf16' if args.bf16 else 'fp32'}, {results['ours']['threads']} threads")
    print(f"{'':8}{'pairs/s':>10}{'peak RSS MB':>13}{'seconds':>10}{'load avg (1 min) before/after':>32}")
    for name, r in results.items():
        print(f"{name:8}{r['pairs_per_s']:>10.3f}{r['peak_rss_mb']:>13.0f}{r['seconds']:>10.1f}"
              f"{r['load_before']:>20.2f} / {r['load_after']:.2f}")
    print(f"speed ratio lmlab / TRL: {results['ours']['pairs_per_s'] / results['trl']['pairs_per_s']:.2f}x")


if __name__ == "__main__":
    main()
