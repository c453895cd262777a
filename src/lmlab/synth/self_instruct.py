"""Self-Instruct (Wang et al., 2023): grow instruction data from a few seed tasks.

Each round builds prompts of 8 demonstration tasks (6 seed, 2 generated once there are two),
asks the teacher for a new task after them, and keeps a task only if it passes the filters
(length, forbidden keywords such as image or graph, a first character that is a letter) and is
novel: its ROUGE-L against every kept instruction is below 0.7 (novelty.py). The teacher then
says whether the task is a classification task; classification tasks get their instance
output-first (a class label, then an input for it), the others input-first, as in the paper, so
that the labels of classification tasks do not all collapse onto one class.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lmlab.errors import LmlabError
from lmlab.synth import filters
from lmlab.synth.novelty import NoveltyFilter
from lmlab.records import read_jsonl
from lmlab.synth.records import Output

TASK_LIST_HEADER = "Come up with a series of tasks:\n\n"
CLASSIFY_QUESTION = ("Can the following task be regarded as a classification task with finite output labels?"
                     "\n\nTask: {instruction}\nIs it classification? Answer Yes or No.")
INPUT_FIRST = ("Come up with an example for the following task. If the task doesn't require additional input, "
               "leave the input empty and write the output directly.\n\n{demos}Task: {instruction}\nInput:")
OUTPUT_FIRST = ("Given the classification task definition and the class labels, generate an input that "
                "corresponds to the class label. If the task doesn't require input, just generate the "
                "correct class label.\n\n{demos}Task: {instruction}\nClass label:")


@dataclass
class Seed:
    instruction: str
    input: str
    output: str
    is_classification: bool


def read_seeds(path) -> list[Seed]:
    rows = read_jsonl(path, required=("instruction",))
    if not rows:
        raise LmlabError(f"{path}: no seed tasks in the file")
    seeds = []
    for r in rows:
        inst = (r.get("instances") or [{}])[0]
        seeds.append(Seed(r["instruction"].strip(), str(inst.get("input", "")).strip(),
                          str(inst.get("output", r.get("output", ""))).strip(), bool(r.get("is_classification"))))
    return seeds


def demonstrations(seeds: list[str], generated: list[str], rng: random.Random, k: int = 8,
                   from_generated: int = 2) -> list[str]:
    """k demonstration tasks: `from_generated` machine-written ones once that many exist, the rest
    seed tasks, in random order."""
    machine = rng.sample(generated, from_generated) if len(generated) >= from_generated else []
    chosen = machine + rng.sample(seeds, k - len(machine))
    rng.shuffle(chosen)
    return chosen


def task_prompt(tasks: list[str]) -> str:
    lines = "".join(f"Task {i}: {t}\n" for i, t in enumerate(tasks, 1))
    return f"{TASK_LIST_HEADER}{lines}Task {len(tasks) + 1}:"


def parse_task(text: str) -> str:
    """The new task: the continuation up to the next task's number or a blank line."""
    text = re.split(r"\n\s*Task \d+\s*:|\n\s*\n", text, maxsplit=1)[0]
    return " ".join(text.split())


def instance_prompt(instruction: str, classification: bool, seeds: list[Seed], rng: random.Random) -> str:
    pool = [s for s in seeds if s.is_classification == classification] or seeds
    demos = rng.sample(pool, min(3, len(pool)))
    if classification:
        d = "".join(f"Task: {s.instruction}\nClass label: {s.output}\nInput: {s.input}\n\n" for s in demos)
        return OUTPUT_FIRST.format(demos=d, instruction=instruction)
    d = "".join(f"Task: {s.instruction}\nInput: {s.input}\nOutput: {s.output}\n\n" for s in demos)
    return INPUT_FIRST.format(demos=d, instruction=instruction)


def parse_instance(text: str, classification: bool) -> tuple[str, str] | None:
    """(input, output) from the teacher's instance; None when it has no output."""
    text = re.split(r"\n\s*\n|\nTask:", text, maxsplit=1)[0]
    if classification:  # "<label>\nInput: <input>"
        label, _, rest = text.partition("\nInput:")
        label, inp = label.strip(), rest.strip()
        return (inp, label) if label else None
    inp, sep, out = text.partition("\nOutput:")  # "<input>\nOutput: <output>"
    if not sep or not out.strip():
        return None
    return inp.strip(), out.strip()


def generate(teacher, seeds: list[Seed], n: int, out: Output, *, batch: int = 16, seed: int = 0,
             threshold: float = 0.7, max_tokens: int = 64, progress: bool = True) -> dict:
    """Grow `out` to n Self-Instruct records; returns the summary (generated, kept, dropped by why)."""
    from tqdm import tqdm

    novelty = NoveltyFilter(threshold)
    for s in seeds:
        novelty.add(s.instruction)
    generated = []
    for r in out.records:  # a resumed run: what was kept counts against novelty again
        novelty.add(r["instruction"])
        generated.append(r["instruction"])
    dropped: dict[str, int] = dict(out.state.get("dropped", {}))
    tried = out.state.get("generated", 0)
    bar = tqdm(total=n, initial=len(out.records), desc="self-instruct", unit="rec", disable=not progress)
    seed_texts = [s.instruction for s in seeds]
    stalled = 0
    while len(out.records) < n:
        rnd = out.state["round"]
        rng = random.Random(f"{seed}-{rnd}")
        prompts = [task_prompt(demonstrations(seed_texts, generated, rng)) for _ in range(batch)]
        texts = teacher.continue_text(prompts, max_tokens, temperature=1.0, seeds=[seed * 100003 + rnd * batch + j
                                                                                   for j in range(batch)],
                                      stop=["\nTask", "\n\n"])
        tried += len(texts)
        fresh = filters.screen(map(parse_task, texts), novelty, dropped)
        if fresh:
            answers = teacher.chat([[{"role": "user", "content": CLASSIFY_QUESTION.format(instruction=t)}]
                                    for t in fresh], max_tokens=3, temperature=0.0, choice=["Yes", "No"])
            is_cls = [a.strip().lower().startswith("yes") for a in answers]
            inst_prompts = [instance_prompt(t, c, seeds, rng) for t, c in zip(fresh, is_cls)]
            inst = teacher.continue_text(inst_prompts, 2 * max_tokens, temperature=0.0, stop=["\n\n", "\nTask:"])
            for t, c, text in zip(fresh, is_cls, inst):
                parsed = parse_instance(text, c)
                if parsed is None:
                    dropped["no instance"] = dropped.get("no instance", 0) + 1
                    continue
                if len(out.records) < n:
                    out.write({"instruction": t, "input": parsed[0], "output": parsed[1],
                               "is_classification": c, "source": "self-instruct"})
                    generated.append(t)
                    bar.update(1)
        stalled = 0 if fresh else stalled + 1
        out.end_round(generated=tried, dropped=dropped)
        if stalled >= 50:
            raise LmlabError(f"self-instruct: 50 rounds in a row gave nothing new ({dropped}); "
                             "the teacher may be too weak or the filters too strict")
    bar.close()
    return {"generated": tried, "kept": len(out.records), **{f"dropped: {k}": v for k, v in sorted(dropped.items())}}
