"""DPO with LoRA on the bundled model: lmlab vs TRL's DPOTrainer (+ peft), same pairs.

    python benchmarks/dpo_speed.py [--pairs 200] [--batch-size 2] [--max-length 256]

The pairs are the first ones of ../shared/data/hh_rlhf_harmless_base_test.jsonl that fit in
max_length under the chat template, so neither side truncates. Both sides: fp32, LoRA r=16,
alpha 32 on all linear layers, its dropout (0.05) switched off while training as both trainers
do by default for DPO (TRL's `disable_dropout`, our `dpo.disable_dropout`), beta 0.1, sigmoid
loss, one epoch, the reference being the adapter-disabled model, no gradient checkpointing
(TRL's default turns it on; here it is off on both sides). Each side runs in its own process so that peak RSS is its own; the timed
part is the training loop (trainer.train() / Trainer.fit()), loading and tokenising excluded.
Prints pairs/s and peak RSS side by side, the speed ratio, and the machine's load average.

It also counts each side's matmul work, from the shapes its model actually saw: every forward
pass's tokens through the transformer blocks and rows through the output layer, at 2 FLOPs per
weight, doubled for passes that are back-propagated (the frozen base weights need only the input
gradient). LoRA's own small matmuls and attention are left out. The speed ratio is then the work
ratio times the ratio of GFLOP/s achieved, and this machine's fp32 GEMM rate (a [2048, 576] x
[576, 3072] product, the best of MKL and oneDNN) caps the second factor.
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


def count_work(layer, labelled=None) -> dict:
    """Hooks that add up the tokens entering `layer` (a transformer block) and the rows the output
    layer projects, separately for passes with and without gradients. For a model whose fused
    output layer projects only labelled positions (TRL's), the rows are the labels other than -100
    passed to `labelled`; ours are counted by `count_head_rows`."""
    import torch

    work = {"block_tokens": [0, 0], "head_rows": [0, 0]}  # [no grad, grad]

    def tokens(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        work["block_tokens"][torch.is_grad_enabled()] += x.numel() // x.shape[-1]

    def labels(module, args, kwargs):
        if kwargs.get("labels") is not None:
            work["head_rows"][torch.is_grad_enabled()] += int((kwargs["labels"] != -100).sum())

    layer.register_forward_pre_hook(tokens, with_kwargs=True)
    if labelled is not None:
        labelled.register_forward_pre_hook(labels, with_kwargs=True)
    return work


def count_head_rows(model, work: dict) -> None:
    """Our objectives project only the positions they score: count the rows entering the output
    layer."""
    import torch

    def rows(module, args):
        x = args[0]
        work["head_rows"][torch.is_grad_enabled()] += x.numel() // x.shape[-1]

    model.lm_head.register_forward_pre_hook(rows)


def run_ours(data: Path, args) -> dict:
    import torch

    from lmlab.config import load_config
    from lmlab.train import dpo as dpo_stage
    from lmlab.train.config import TrainConfig
    from lmlab.train.objectives import dpo
    from lmlab.train.preference import comparison_batches
    from lmlab.train.trainer import Trainer

    cfg = load_config(TrainConfig, None, None, data=str(data), output=tempfile.mkdtemp(), method="lora",
                      batch_size=args.batch_size, max_length=args.max_length, epochs=1, lr=5e-6, progress=False,
                      log_every=10 ** 6, lora={"r": 16, "alpha": 32, "dropout": 0.05}, bf16=args.bf16)
    run = dpo_stage.start(cfg)
    model = run.model
    data = comparison_batches(cfg, run.tokenizer, cfg.data, dpo.collate)
    trainer = Trainer(model, dpo.DPO(0.1), data, cfg, None, run.d)
    work = count_work(model.layers[0])
    count_head_rows(model, work)
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    return {"steps": result["step"], "seconds": seconds, "threads": torch.get_num_threads(), "work": work}


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
    modules = dict(trainer.model.named_modules())
    layer = next(m for n, m in modules.items() if n.endswith("layers.0"))
    work = count_work(layer, labelled=trainer.model)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    return {"steps": result.global_step, "seconds": seconds, "threads": torch.get_num_threads(), "work": work}


def weights() -> tuple[int, int]:
    """Weights of the bundled model's transformer blocks' linear layers and of its output layer."""
    import torch

    from lmlab.model.config import ModelConfig
    from lmlab.model.io.resolve import resolve
    from lmlab.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(ModelConfig.from_hf(json.loads((resolve("smollm2") / "config.json").read_text())))
    body = sum(m.weight.numel() for m in model.layers.modules() if isinstance(m, torch.nn.Linear))
    return body, model.lm_head.weight.numel()


def gemm_rate(threads: int) -> float:
    """This machine's fp32 GEMM GFLOP/s on a training-sized product: the best of MKL and oneDNN."""
    import torch

    from lmlab.cpu.onednn import PackedLinear

    torch.set_num_threads(threads)
    x, linear = torch.randn(2048, 576), torch.nn.Linear(576, 3072, bias=False)
    best = float("inf")
    with torch.inference_mode():
        for f in (linear, PackedLinear(linear)):
            for _ in range(4):
                t = time.perf_counter()
                f(x)
                best = min(best, time.perf_counter() - t)
    return 2 * x.shape[0] * 576 * 3072 / best / 1e9


def gflops(work: dict, body: int, head: int) -> float:
    """Matmul work of the counted passes: 2 FLOPs per weight per token, twice that with a backward."""
    (b0, b1), (h0, h1) = work["block_tokens"], work["head_rows"]
    return 2 * (body * (b0 + 2 * b1) + head * (h0 + 2 * h1)) / 1e9


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
    ratio = results['ours']['pairs_per_s'] / results['trl']['pairs_per_s']
    print(f"speed ratio lmlab / TRL: {ratio:.2f}x")
    body, head = weights()
    rate = gemm_rate(results["ours"]["threads"])
    print(f"\nmatmul work (transformer blocks + output layer; LoRA and attention left out), "
          f"this machine's fp32 GEMM: {rate:.1f} GFLOP/s")
    print(f"{'':8}{'block tokens':>14}{'head rows':>12}{'GFLOP':>10}{'GFLOP/s':>10}")
    for name, r in results.items():
        w = r["work"]
        r["gflop"] = gflops(w, body, head)
        print(f"{name:8}{sum(w['block_tokens']):>14}{sum(w['head_rows']):>12}{r['gflop']:>10.0f}"
              f"{r['gflop'] / r['seconds']:>10.1f}")
    less = results["trl"]["gflop"] / results["ours"]["gflop"]
    faster = ratio / less
    print(f"speed ratio {ratio:.2f}x = {less:.2f}x less work x {faster:.2f}x the GFLOP/s; at this machine's GEMM "
          f"rate the ratio could reach at most {less * rate / (results['trl']['gflop'] / results['trl']['seconds']):.2f}x")


if __name__ == "__main__":
    import _results

    _results.run(main)
