"""Multiple choice by log-likelihood (lm-eval's `multiple_choice` output type).

Each choice is scored as the continuation `target_delimiter + choice` of the item's prompt.
acc: the highest log-likelihood is right; acc_norm: the same after dividing by the choice's
length in characters (lm-eval divides by len(choice), the delimiter not counted); acc_bytes:
by its length in UTF-8 bytes. Ties go to the first choice (numpy's argmax).
"""

from __future__ import annotations

from typing import Callable

from lmlab.eval.loglik import loglikelihoods
from lmlab.eval.prompting import Prompter
from lmlab.eval.tasks import Item, Task


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def run(lm, task: Task, items: list[Item], prompter: Prompter, *, max_length: int | None = None,
        progress: Callable[[float], None] | None = None) -> list[dict]:
    """One sample dict per item: doc_id, loglikelihoods, pred, acc, acc_norm, acc_bytes, ..."""
    pairs, owner = [], []
    for item in items:
        context = prompter.prompt(item)
        for choice in item.choices:
            pairs.append((context, prompter.delimiter + choice))
            owner.append(item.doc_id)
    per_request = len(items) / max(len(pairs), 1)  # progress is counted in items
    scores = loglikelihoods(lm, pairs, max_length=max_length,
                            progress=(lambda n: progress(n * per_request)) if progress else None)
    samples, k = [], 0
    for item in items:
        n = len(item.choices)
        got = scores[k:k + n]
        k += n
        lls = [s.logprob for s in got]
        pred = _argmax(lls)
        pred_norm = _argmax([ll / len(c) for ll, c in zip(lls, item.choices)])
        pred_bytes = _argmax([ll / len(c.encode("utf-8")) for ll, c in zip(lls, item.choices)])
        samples.append({
            "doc_id": item.doc_id, "where": item.record.where, "group": item.record.group or None,
            "loglikelihoods": lls, "is_greedy": [s.greedy for s in got],
            "gold": item.gold, "pred": pred, "pred_norm": pred_norm,
            "acc": float(pred == item.gold), "acc_norm": float(pred_norm == item.gold),
            "acc_bytes": float(pred_bytes == item.gold),
        })
    return samples
