"""Generative tasks: generate until a stop string, extract the answer, compare.

Answer extraction (a task's `answer`):
  none          the response, stripped
  first_number  the first number in the response
  last_number   the last number (lm-eval's gsm8k "flexible-extract")
  gsm8k         "The answer is N", else "#### N", else the last number
  {regex: R, group: G}   the first match of R (group G, default 1 if R has groups)
Exact match compares numbers as numbers ("$1,000." equals "1000"), other text stripped.

All prompts go to the engine at once (continuous batching). Self-consistency asks for N samples
per prompt (SamplingParams.n) and votes; zero-shot CoT runs a second, short greedy round on
every reasoning path to extract its answer.
"""

from __future__ import annotations

import re
from typing import Callable

from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError
from lmlab.eval.prompting import Prompter, majority_vote
from lmlab.eval.tasks import Item, Task

NUMBER = re.compile(r"-?[$]?\d[\d,]*(?:\.\d+)?")


def _clean_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f == int(f) else repr(f)


def extract(text: str, how: str | dict) -> str | None:
    if isinstance(how, dict):
        if "regex" not in how:
            raise LmlabError(f"answer extraction {how!r}: expected {{regex: ..., group: ...}}")
        m = re.search(how["regex"], text)
        if not m:
            return None
        group = how.get("group", 1 if m.re.groups else 0)
        return (m.group(group) or "").strip()
    if how == "none":
        return text.strip()
    if how in ("first_number", "last_number"):
        found = NUMBER.findall(text)
        return (_clean_number(found[0 if how == "first_number" else -1])) if found else None
    if how == "gsm8k":
        for pattern in (r"[Tt]he answer is:?\s*(-?[$]?\d[\d,]*(?:\.\d+)?)", r"####\s*(-?[$]?\d[\d,]*(?:\.\d+)?)"):
            m = re.search(pattern, text)
            if m:
                return _clean_number(m.group(1))
        return extract(text, "last_number")
    raise LmlabError(f"unknown answer extraction {how!r}: none, first_number, last_number, gsm8k "
                     f"or {{regex: ...}}")


def exact_match(pred: str | None, target: str) -> float:
    if pred is None:
        return 0.0
    a, b = pred.strip(), target.strip()
    if _is_number(a) and _is_number(b):
        return float(_clean_number(a) == _clean_number(b))
    return float(a == b)


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", "").replace("$", "").strip().rstrip("."))
        return True
    except ValueError:
        return False


def _generate(lm, prompts: list[str], params: SamplingParams, progress: Callable[[float], None] | None,
              weight: float) -> list[list[str]]:
    """Texts of every sample for each prompt, through the engine's continuous batching."""
    engine = lm.engine
    ids = [engine.add_request(lm.tokenizer.encode(p, add_special_tokens=False), params) for p in prompts]
    done: dict[str, list[str]] = {}
    try:
        while len(done) < len(ids):
            for out in engine.step():
                done[out.request_id] = [c.text for c in out.outputs]
                if progress:
                    progress(weight)
    except BaseException:
        for rid in ids:
            engine.abort(rid)
        while engine.has_unfinished():
            engine.step()
        raise
    return [done[i] for i in ids]


def run(lm, task: Task, items: list[Item], prompter: Prompter, *, max_new_tokens: int | None = None,
        progress: Callable[[float], None] | None = None) -> list[dict]:
    opts = prompter.options
    n = opts.self_consistency or 1
    greedy = not opts.self_consistency
    params = SamplingParams(max_tokens=max_new_tokens or task.max_tokens, stop=list(task.until), n=n,
                            temperature=0.0 if greedy else opts.temperature,
                            seed=None if greedy else opts.seed)
    prompts = [prompter.prompt(item) for item in items]
    stage_weight = 0.5 if opts.zero_shot_cot else 1.0  # the bar counts items; two stages share it
    paths = _generate(lm, prompts, params, progress, stage_weight)
    if opts.zero_shot_cot:
        second = [prompter.second_stage(p, r) for p, rs in zip(prompts, paths) for r in rs]
        short = SamplingParams(max_tokens=16, temperature=0.0, stop=["\n", *task.until])
        per_item = 1 / n
        answers_text = [o[0] for o in _generate(lm, second, short, progress, stage_weight * per_item)]
        finals = [answers_text[i * n:(i + 1) * n] for i in range(len(items))]
        how = "first_number" if task.answer in ("gsm8k", "last_number") else task.answer
    else:
        finals, how = paths, task.answer
    samples = []
    for item, prompt, rs, fs in zip(items, prompts, paths, finals):
        answers = [extract(f, how) for f in fs]
        pred = majority_vote(answers) if n > 1 else answers[0]
        s = {"doc_id": item.doc_id, "where": item.record.where, "prompt": prompt,
             "response": rs[0] if n == 1 else rs, "pred": pred, "target": item.target,
             "exact_match": exact_match(pred, item.target)}
        if opts.zero_shot_cot:
            s["answer_stage"] = fs[0] if n == 1 else fs
        if n > 1:
            s["votes"] = answers
        samples.append(s)
    return samples


def reference_metrics(task: Task, samples: list[dict]) -> dict:
    """Corpus-level BLEU / chrF / ROUGE / embedding similarity of the responses to the targets."""
    names = [m for m in task.metrics if m != "exact_match"]
    if not names:
        return {}
    from lmlab.eval import metrics as M  # sacrebleu, rouge-score, sentence embeddings: loaded only here

    preds = [(s["pred"] if task.answer != "none" else s["response"]) or "" for s in samples]
    preds = [p if isinstance(p, str) else p[0] for p in preds]
    refs = [s["target"] for s in samples]
    out, rouge = {}, None
    for m in names:
        if m == "bleu":
            out[m] = M.bleu(preds, refs)
        elif m == "chrf":
            out[m] = M.chrf(preds, refs)
        elif m.startswith("rouge"):
            rouge = rouge or M.rouge(preds, refs)
            out[m] = rouge[m]
        elif m == "embedding":
            out[m] = M.embedding_similarity(preds, refs)
    return out
