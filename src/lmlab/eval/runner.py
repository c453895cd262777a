"""`evaluate(lm, tasks, ...)`: the one entry point the CLI and Python share.

First every task's data is loaded, checked and rendered (bad input fails here, naming the file
and the line, before a model is even loaded: `lm` may be a function that loads it). Then each
task runs by type, is summarised with standard errors, and DIR/results.json and
DIR/samples_<task>.jsonl are written. `run(EvalConfig)` is the same from a typed config (what
`lmlab eval` calls), and writes the resolved config as DIR/config.yaml beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.eval import generative, multiple_choice, perplexity, results
from lmlab.eval.config import EvalConfig
from lmlab.eval.data import Record, load_records
from lmlab.eval.prompting import PromptOptions, Prompter
from lmlab.eval.tasks import Item, Task, get_task, make_items, with_prompt


@dataclass
class _Prepared:
    task: Task
    items: list[Item]
    pool: list[Item] | None  # demonstrations: a separate pool (MMLU's dev split) or the whole file


def evaluate(lm, tasks: str | Task | list[str | Task], *, data: str | None = None, limit: int | None = None,
             fewshot: int = 0, seed: int = 1234, chat_template: bool = False, cot: bool = False,
             zero_shot_cot: bool = False, self_consistency: int = 0, temperature: float = 0.7,
             max_new_tokens: int | None = None, fmt: str | None = None, prompt_template: str | None = None,
             split: str | None = None, max_length: int | None = None, code_samples: int = 1,
             ks: tuple[int, ...] = (1,), output_dir: str | Path | None = None, progress: bool = True,
             model_name: str | None = None) -> dict:
    """Evaluate `lm` (an LM, or a function returning one) on tasks: built-in names, YAML files or
    Task objects. Returns the report that results.json holds: {"results": {task: metrics},
    "config", "model", "seed", "versions", "date"}."""
    tasks = tasks if isinstance(tasks, list) else [tasks]
    tasks = [with_prompt(t if isinstance(t, Task) else get_task(t, fmt), prompt_template) for t in tasks]
    if limit is not None and limit < 1:
        raise LmlabError(f"--limit must be >= 1, got {limit}")
    if cot and not fewshot:
        fewshot = 8  # chain-of-thought prompting is few-shot by definition (Wei et al. used 8)
    options = PromptOptions(fewshot, seed, chat_template, cot, zero_shot_cot, self_consistency, temperature)
    prepared = [_prepare(t, data, split, limit, options) for t in tasks]

    lm = lm() if callable(lm) else lm
    config = {"tasks": [t.name for t in tasks], "data": data, "limit": limit, "fewshot": fewshot, "seed": seed,
              "chat_template": chat_template, "cot": cot, "zero_shot_cot": zero_shot_cot,
              "self_consistency": self_consistency, "temperature": temperature if self_consistency else 0.0,
              "max_new_tokens": max_new_tokens, "format": fmt, "prompt_template": prompt_template,
              "max_length": max_length or lm.model.config.max_seq_len}
    report = results.new_report(config, _model_info(lm, model_name))
    all_samples = {}
    for p in prepared:
        t0 = time.perf_counter()
        if p.task.kind == "humaneval":
            metrics = {p.task.name: _humaneval(lm, limit, code_samples, ks, options, output_dir, max_new_tokens,
                                               progress)}
            samples = None  # lmlab.eval.code writes samples_humaneval.jsonl itself
        else:
            metrics, samples = _run(lm, p, options, max_length, max_new_tokens, progress)
        seconds = time.perf_counter() - t0
        for name, m in metrics.items():
            n = m.get("n") or len(samples or [])
            m.update(seconds=round(seconds, 3), items_per_s=round(n / seconds, 3) if seconds and n else None)
            report["results"][name] = m
        if samples is not None:
            all_samples[p.task.name] = samples
    if output_dir is not None:
        results.write(output_dir, report, all_samples)
    return report


def run(config: EvalConfig, lm=None) -> dict:
    """Evaluate as `config` says; `lm` (an LM or a function returning one) defaults to loading
    `config.model` in `config.weights` once every task's data is checked."""
    if not config.tasks:
        raise LmlabError("no task: give --task NAME (or `tasks:` in the config file)")
    if lm is None:
        def lm():
            from lmlab.lm import load

            return load(config.model, config.weights, workload="scoring")
    report = evaluate(
        lm, list(config.tasks), data=config.data, split=config.split, limit=config.limit, fewshot=config.fewshot,
        seed=config.seed, chat_template=config.chat_template, cot=config.cot, zero_shot_cot=config.zero_shot_cot,
        self_consistency=config.self_consistency, temperature=config.temperature,
        max_new_tokens=config.max_new_tokens, fmt=config.format, prompt_template=config.prompt_template,
        max_length=config.max_length, code_samples=config.samples, ks=tuple(config.k), output_dir=config.output,
        progress=config.progress, model_name=config.model or "smollm2")
    if config.output is not None:
        from lmlab.config import save_config

        Path(config.output).mkdir(parents=True, exist_ok=True)
        save_config(config, Path(config.output) / "config.yaml")
    return report


def _prepare(task: Task, data, split, limit, options: PromptOptions) -> _Prepared:
    if task.kind == "humaneval":
        return _Prepared(task, [], None)
    options.check(task)
    source = data or task.data
    if not source:
        raise LmlabError(f"task {task.name}: no data; give --data FILE (or `data:` in the task YAML)")
    everything = (task.loader or load_records)(source, split or task.split)
    # --limit: the first N items; for grouped data (MMLU subjects) the first N of each group.
    records = _first_per_group(everything, limit) if limit else everything
    if not records:
        raise LmlabError(f"{source}: no items")
    items = make_items(task, records)
    pool = None
    if options.fewshot:
        separate = task.fewshot_loader(source) if task.fewshot_loader else None
        if separate:
            pool = make_items(task, separate)
        elif len(records) < len(everything):  # demonstrations may come from beyond the limit
            pool = make_items(task, everything)
    return _Prepared(task, items, pool)


def _first_per_group(records: list[Record], limit: int) -> list[Record]:
    kept, seen = [], {}
    for r in records:
        seen[r.group] = seen.get(r.group, 0) + 1
        if seen[r.group] <= limit:
            kept.append(r)
    return kept


def _model_info(lm, name: str | None) -> dict:
    p = next(lm.model.parameters())
    return {"name": name or (lm.folder.name if lm.folder else None), "folder": str(lm.folder) if lm.folder else None,
            "dtype": str(p.dtype).replace("torch.", ""), "params": sum(x.numel() for x in lm.model.parameters())}


def _run(lm, p: _Prepared, options, max_length, max_new_tokens, progress: bool):
    bar = _Bar(p.task.name, len(p.items)) if progress else None
    try:
        return _run_items(lm, p.task, p.items, p.pool, options, max_length, max_new_tokens,
                          bar.advance if bar else None)
    finally:
        if bar:
            bar.close()


def _run_items(lm, task: Task, items, pool, options, max_length, max_new_tokens, tick):
    """Run one task's items -> ({result name: metrics}, samples)."""
    if task.kind == "perplexity":
        samples, corpus = perplexity.run(lm, items, max_length=max_length, progress=tick)
        metrics = {m: corpus[m] for m in task.metrics}
        metrics.update({f"{m}_stderr": None for m in task.metrics}, n=corpus["n"], tokens=corpus["tokens"])
        return {task.name: metrics}, samples
    prompter = Prompter(task, items, options, lm.tokenizer, pool)
    if task.kind == "multiple_choice":
        samples = multiple_choice.run(lm, task, items, prompter, max_length=max_length, progress=tick)
        out = {task.name: results.summarize(samples, task.metrics)}
        groups = sorted({s["group"] for s in samples if s["group"]})
        if len(groups) > 1:  # per subject (MMLU): one row each, after the overall one
            for g in groups:
                out[f"{task.name}:{g}"] = results.summarize([s for s in samples if s["group"] == g],
                                                            task.metrics)
        return out, samples
    samples = generative.run(lm, task, items, prompter, max_new_tokens=max_new_tokens, progress=tick)
    metrics = results.summarize(samples, ["exact_match"]) if "exact_match" in task.metrics else \
        {"n": len(samples)}
    for name, value in generative.reference_metrics(task, samples).items():
        metrics[name], metrics[f"{name}_stderr"] = value, None
    return {task.name: metrics}, samples


def _humaneval(lm, limit, n_samples, ks, options: PromptOptions, output_dir, max_new_tokens, progress) -> dict:
    try:
        from lmlab.eval.code import evaluate_humaneval
    except ImportError as e:
        raise LmlabError(f"humaneval is unavailable ({e})") from None
    temperature = options.temperature if n_samples > 1 else 0.0
    extra = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    m = evaluate_humaneval(lm, limit=limit, n_samples=n_samples, ks=tuple(ks), temperature=temperature,
                           seed=options.seed, output_dir=output_dir, progress=progress, **extra)
    return {**m, **{f"{k}_stderr": None for k in m if k.startswith("pass@") and f"{k}_stderr" not in m}}


class _Bar:
    """A tqdm bar counted in items (items/s and ETA), fed fractional progress by the runners."""

    def __init__(self, name: str, total: int):
        from tqdm import tqdm

        self.tqdm = tqdm(total=total, desc=name, unit="item", dynamic_ncols=True)
        self.done = 0.0

    def advance(self, n: float) -> None:
        before = int(self.done)
        self.done = min(self.done + n, self.tqdm.total)
        if int(self.done) > before:
            self.tqdm.update(int(self.done) - before)

    def close(self) -> None:
        if self.total_reached():  # fractional progress may stop a hair short of the total
            self.tqdm.update(self.tqdm.total - self.tqdm.n)
        self.tqdm.close()

    def total_reached(self) -> bool:
        return self.tqdm.total - self.done < 1e-6 * self.tqdm.total + 1e-9 and self.tqdm.n < self.tqdm.total
