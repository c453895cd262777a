"""`lmlab train OBJECTIVE ...`: argument parsing only; the work is done by lmlab.train.

Every objective takes the same options: `--config recipe.yaml`, the common flags below, and any
`key=value` overrides of the config (dotted for sections: `lora.r=8`).
"""

from __future__ import annotations

import argparse

# flag -> config key; flags are shortcuts for the most used keys, overrides reach every key.
FLAGS = {
    "--model": ("model", str, "bundled name, HF folder, .gguf or hub id (default: bundled smollm2)"),
    "--data": ("data", str, "training data (.jsonl, .json, .parquet, .csv, hf:NAME[:SPLIT], or flan: built-in tasks)"),
    "--init": ("pretrain.init", str, "pretrain: continue from these weights (domain-adaptive pretraining)"),
    "--eval-data": ("eval_data", str, "held-out data evaluated during training"),
    "--holdout-tasks": ("flan.holdout", lambda s: [x.strip() for x in s.split(",") if x.strip()],
                        "with --data flan: task clusters kept out of training and scored before/after"),
    "--output": ("output", str, "run folder: metrics.jsonl, loss.png, checkpoints/, final/"),
    "--method": ("method", str, "what trains: full | head | feature | lora | adapter | prefix | prompt"),
    "--max-steps": ("max_steps", int, "optimizer steps (0: run --epochs)"),
    "--epochs": ("epochs", float, None),
    "--batch-size": ("batch_size", int, "sequences per micro-batch per process"),
    "--grad-accum": ("grad_accum", int, None),
    "--max-length": ("max_length", int, "tokens per sequence (longer ones are cut)"),
    "--lr": ("lr", float, None),
    "--warmup-steps": ("warmup_steps", int, None),
    "--schedule": ("schedule", str, "cosine | linear | constant"),
    "--lora-r": ("lora.r", int, "LoRA rank"),
    "--lora-alpha": ("lora.alpha", float, None),
    "--seed": ("seed", int, None),
    "--eval-every": ("eval_every", int, None),
    "--save-every": ("save_every", int, "checkpoint every N steps (always at the end)"),
    "--device": ("device", str, "auto | cpu | cuda"),
    "--reward-model": ("rm.models", str, "ppo/grpo/rsft: trained reward model run folder(s), comma-separated"),
    "--beta": ("dpo.beta", float, "dpo: strength of the KL constraint to the reference"),
}
# Objectives trained from comparisons or a reward model: name -> (function, help).
PREFERENCE = {
    "rm": ("lmlab.train.rm:rm", "reward model on preference pairs (eval_accuracy: held-out pair accuracy)"),
    "dpo": ("lmlab.train.dpo:dpo", "direct preference optimisation (eval_accuracy: implicit-reward accuracy)"),
    "pro": ("lmlab.train.pro:pro", "preference ranking optimisation over ranked lists"),
    "ppo": ("lmlab.train.rl:ppo", "RLHF: PPO against a reward model with a KL penalty"),
    "grpo": ("lmlab.train.rl:grpo", "group-relative policy optimisation against a reward model"),
    "rsft": ("lmlab.train.rl:rsft", "rejection sampling: best of K samples by a reward model, then SFT"),
}
SWITCHES = {
    "--resume": ("resume", "continue from the last complete checkpoint in --output"),
    "--packing": ("packing", "pack sequences into full rows (else length-bucketed padding)"),
    "--bf16": ("bf16", "bf16 autocast"),
    "--gradient-checkpointing": ("gradient_checkpointing", "recompute activations in backward"),
    "--skip-bad-rows": ("skip_bad_rows", "skip (and count) malformed data lines instead of stopping"),
    "--strict": ("strict", "stop at a preference row that gives no usable pair (else count and skip it)"),
    "--no-progress": ("progress", "no progress bar"),
}


def _options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", help="YAML recipe; flags and key=value overrides apply on top")
    for flag, (key, typ, help_) in FLAGS.items():
        p.add_argument(flag, dest=key, type=typ, default=argparse.SUPPRESS, help=help_)
    for flag, (key, help_) in SWITCHES.items():
        p.add_argument(flag, dest=key, action="store_const", const=flag != "--no-progress",
                       default=argparse.SUPPRESS, help=help_)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. lora.dropout=0.1")
    return p


def register(sub, common) -> None:
    t = sub.add_parser("train", parents=[common], help="train: sft (more objectives per stage)")
    tsub = t.add_subparsers(dest="objective", metavar="OBJECTIVE", required=True)
    s = tsub.add_parser("sft", parents=[common, _options()],
                        help="supervised fine-tuning (instruction tuning), LoRA or full")
    s.set_defaults(func=cmd_train, run="lmlab.train.sft:sft")
    tsub.add_parser("pretrain", parents=[common, _options()],
                    help="a model from scratch on a corpus (pretrain.* keys: architecture, MoE, tokenizer)"
                    ).set_defaults(func=cmd_train, run="lmlab.train.pretrain:pretrain")
    for name, (run, help_) in PREFERENCE.items():
        tsub.add_parser(name, parents=[common, _options()], help=help_).set_defaults(func=cmd_train, run=run)


def _config(args, cls):
    from lmlab.config import load_config

    keys = {k for k, *_ in FLAGS.values()} | {k for k, _ in SWITCHES.values()}
    values = {k: v for k, v in vars(args).items() if k in keys}
    return load_config(cls, args.config, args.overrides, **values)


def cmd_train(args) -> int:
    import importlib

    from lmlab.report.table import print_kv
    from lmlab.train.config import TrainConfig

    module, _, name = args.run.partition(":")
    result = getattr(importlib.import_module(module), name)(_config(args, TrainConfig))
    print_kv({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in result.items()}, title=f"train {args.objective}")
    return 0
