"""Evaluation: tasks, metrics, code execution and prompting.

    from lmlab.eval import evaluate
    report = evaluate(lm, "hellaswag", data="hellaswag.jsonl", limit=200, output_dir="out")

Modules: data (JSONL/CSV/Parquet/hub records), tasks (built-ins and YAML tasks), prompting
(few-shot, CoT, zero-shot CoT, self-consistency, chat template), loglik and
lmlab.engine.scoring (log-likelihoods), multiple_choice, generative, perplexity, code and
sandbox (HumanEval), metrics (BLEU, chrF, ROUGE, embeddings), results (files and tables),
runner (evaluate).
"""

__all__ = ["evaluate"]


def __getattr__(name):
    if name == "evaluate":  # lazily: importing lmlab.eval should not import torch
        from lmlab.eval.runner import evaluate
        return evaluate
    raise AttributeError(f"module 'lmlab.eval' has no attribute {name!r}")
