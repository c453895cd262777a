"""`lmlab eval ...`: argument parsing only; the work is done by lmlab.eval.

The flags are generated from `EvalConfig` (lmlab/eval/config.py); `--config FILE` and
`key=value` overrides reach the same fields.
"""

from __future__ import annotations


def register(sub, common) -> None:
    """Add this area's subcommands to the top-level subparsers (called by lmlab.cli.main)."""
    from lmlab.config import add_flags
    from lmlab.eval.config import EvalConfig

    e = sub.add_parser(
        "eval", parents=[common], help="evaluate a model on benchmarks (lm-eval compatible numbers)",
        description="Evaluate on built-in tasks (hellaswag, mmlu, arc, gsm8k, perplexity, humaneval) "
                    "or a task YAML file. Writes DIR/results.json, DIR/samples_<task>.jsonl and "
                    "DIR/config.yaml and prints a Markdown table.")
    add_flags(e, EvalConfig)
    e.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from lmlab.config import from_args
    from lmlab.eval.config import EvalConfig
    from lmlab.eval.results import markdown_table
    from lmlab.eval.runner import run

    config = from_args(EvalConfig, args)
    report = run(config)  # the model loads only once every task's data has been read and checked
    print(markdown_table(report["results"]))
    if config.output:
        print(f"\nwrote {config.output}/results.json")
    return 0
