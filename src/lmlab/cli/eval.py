"""`lmlab eval ...`: argument parsing only; the work is done by lmlab.eval."""

from __future__ import annotations

import argparse


def register(sub, common) -> None:
    """Add this area's subcommands to the top-level subparsers (called by lmlab.cli.main)."""
    e = sub.add_parser(
        "eval", parents=[common], help="evaluate a model on benchmarks (lm-eval compatible numbers)",
        description="Evaluate on built-in tasks (hellaswag, mmlu, arc, gsm8k, perplexity, humaneval) "
                    "or a task YAML file. Writes DIR/results.json and DIR/samples_<task>.jsonl and prints "
                    "a Markdown table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--model", "-m", default=None,
                   help="bundled name (default smollm2), HF folder, .gguf file or hub id org/name")
    e.add_argument("--weights", default="fp32", choices=["fp32", "bf16", "int8", "w8a8", "int4"],
                   help="inference weight format (fp32 for numbers comparable with lm-eval)")
    e.add_argument("--task", "-t", action="append", required=True, metavar="TASK",
                   help="built-in task name or task YAML file (repeatable)")
    e.add_argument("--data", default=None,
                   help="data file (JSONL/JSON/CSV/Parquet/text), MMLU folder, or hf:org/name[:config]")
    e.add_argument("--split", default=None, help="split of a hub dataset")
    e.add_argument("--limit", type=int, default=None, help="evaluate the first N items (per MMLU subject)")
    e.add_argument("--output", "-o", default=None, metavar="DIR", help="write results.json and samples here")
    e.add_argument("--fewshot", type=int, default=0, metavar="K", help="K demonstrations per item")
    e.add_argument("--seed", type=int, default=1234, help="few-shot selection and sampling seed")
    e.add_argument("--chat-template", action="store_true", help="wrap prompts in the model's chat template")
    e.add_argument("--cot", action="store_true",
                   help="chain of thought: demonstrations with reasoning (default 8 of them)")
    e.add_argument("--zero-shot-cot", action="store_true",
                   help="two stages: \"Let's think step by step.\", then answer extraction")
    e.add_argument("--self-consistency", type=int, default=0, metavar="N",
                   help="sample N reasoning paths and take the majority answer")
    e.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (self-consistency, "
                   "humaneval --samples > 1)")
    e.add_argument("--max-new-tokens", type=int, default=None, help="generation limit (default: the task's)")
    e.add_argument("--format", default=None, choices=["letter", "cloze"], help="mmlu prompt format")
    e.add_argument("--prompt-template", default=None, metavar="FILE", help="Jinja prompt template file")
    e.add_argument("--max-length", type=int, default=None,
                   help="longest sequence scored (perplexity window), default: the model's context")
    e.add_argument("--samples", type=int, default=1, metavar="N", help="humaneval: completions per problem")
    e.add_argument("--k", default="1", help="humaneval: pass@k values, comma-separated")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from lmlab.errors import LmlabError
    from lmlab.eval.results import markdown_table
    from lmlab.eval.runner import evaluate
    from lmlab.lm import load

    try:
        ks = tuple(int(k) for k in args.k.split(","))
    except ValueError:
        raise LmlabError(f"--k takes comma-separated integers, got {args.k!r}") from None
    # The model loads only once every task's data has been read and checked.
    report = evaluate(
        lambda: load(args.model, args.weights), args.task, data=args.data, split=args.split, limit=args.limit,
        fewshot=args.fewshot, seed=args.seed, chat_template=args.chat_template, cot=args.cot,
        zero_shot_cot=args.zero_shot_cot, self_consistency=args.self_consistency, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, fmt=args.format, prompt_template=args.prompt_template,
        max_length=args.max_length, code_samples=args.samples, ks=ks, output_dir=args.output,
        progress=not args.no_progress, model_name=args.model or "smollm2")
    print(markdown_table(report["results"]))
    if args.output:
        print(f"\nwrote {args.output}/results.json")
    return 0
