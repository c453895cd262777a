"""FLAN in miniature: task families written by code, each under several instruction templates.

Every family is verifiable (its answer is computed), belongs to a cluster, and has templates
phrased differently, as FLAN rewrote each NLP dataset. Holding whole clusters out of training
and measuring them before and after SFT on the rest shows the FLAN effect: instruction tuning
on some kinds of task helps on kinds it never saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

POSITIVE = ["wonderful", "great", "lovely", "excellent", "delightful", "fantastic", "pleasant", "superb"]
NEGATIVE = ["terrible", "awful", "boring", "horrible", "dreadful", "poor", "disappointing", "bad"]
THINGS = ["film", "meal", "hotel", "concert", "book", "game", "trip", "class"]
TOPICS = {"sport": ["The striker scored twice in the final", "The team won the league on Sunday",
                    "She ran the marathon in record time", "The match went to extra time"],
          "food": ["The soup needs more salt and pepper", "Bake the bread for forty minutes",
                   "We ordered noodles and dumplings", "The cake was made with fresh lemons"],
          "weather": ["Heavy rain is expected tomorrow morning", "It will be sunny and warm all week",
                      "Strong winds closed the coastal roads", "Snow fell across the hills overnight"]}
NAMES = ["Alice", "Omar", "Priya", "Lukas", "Mei", "Carlos", "Fatima", "John"]
CITIES = ["Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Delhi", "Boston", "Sydney"]
WORDS = ["apple", "river", "candle", "garden", "pencil", "window", "rocket", "silver", "planet", "marble"]


@dataclass
class Family:
    name: str
    cluster: str
    make: Callable[[random.Random], tuple[dict, str]]  # fields for the templates, answer
    templates: list[str]


def _add(r):
    a, b = r.randint(2, 60), r.randint(2, 60)
    return {"a": a, "b": b}, str(a + b)


def _sub(r):
    a, b = sorted((r.randint(2, 90), r.randint(2, 90)), reverse=True)
    return {"a": a, "b": b}, str(a - b)


def _km(r):
    k = r.randint(2, 15)
    return {"x": k}, str(k * 1000)


def _hours(r):
    h = r.randint(2, 12)
    return {"x": h}, str(h * 60)


def _sort(r):
    xs = r.sample(range(1, 50), 4)
    return {"xs": ", ".join(map(str, xs))}, ", ".join(map(str, sorted(xs)))


def _max(r):
    xs = r.sample(range(1, 99), 5)
    return {"xs": ", ".join(map(str, xs))}, str(max(xs))


def _upper(r):
    w = r.choice(WORDS)
    return {"w": w}, w.upper()


def _first_letter(r):
    w = r.choice(WORDS)
    return {"w": w}, w[0]


def _name(r):
    n, c = r.choice(NAMES), r.choice(CITIES)
    return {"s": f"Yesterday {n} took the train to {c} to visit a friend."}, n


def _city(r):
    n, c = r.choice(NAMES), r.choice(CITIES)
    return {"s": f"{n} has lived in {c} for {r.randint(2, 30)} years."}, c


def _sentiment(r):
    good = r.random() < 0.5
    word = r.choice(POSITIVE if good else NEGATIVE)
    return {"s": f"The {r.choice(THINGS)} was {word}."}, "positive" if good else "negative"


def _topic(r):
    topic = r.choice(sorted(TOPICS))
    return {"s": r.choice(TOPICS[topic]) + "."}, topic


FAMILIES = [
    Family("addition", "arithmetic", _add, [
        "What is {a} plus {b}? Answer with the number only.", "Compute {a} + {b}.", "Add {a} and {b}."]),
    Family("subtraction", "arithmetic", _sub, [
        "What is {a} minus {b}? Answer with the number only.", "Compute {a} - {b}.", "Subtract {b} from {a}."]),
    Family("km_to_m", "conversion", _km, [
        "How many metres are in {x} kilometres? Give only the number.", "Convert {x} km to metres.",
        "{x} kilometres is how many metres?"]),
    Family("hours_to_minutes", "conversion", _hours, [
        "How many minutes are in {x} hours? Give only the number.", "Convert {x} hours to minutes.",
        "{x} hours equals how many minutes?"]),
    Family("sort", "lists", _sort, [
        "Sort these numbers from smallest to largest: {xs}", "Put in ascending order: {xs}",
        "Order the list {xs} from low to high."]),
    Family("maximum", "lists", _max, [
        "Which is the largest number in {xs}?", "Give the maximum of: {xs}", "What is the biggest of {xs}?"]),
    Family("uppercase", "text", _upper, [
        "Write the word '{w}' in capital letters.", "Uppercase this word: {w}", "Convert {w} to upper case."]),
    Family("first_letter", "text", _first_letter, [
        "What is the first letter of the word '{w}'?", "Give the initial letter of {w}.",
        "Which letter does '{w}' start with?"]),
    Family("person", "extraction", _name, [
        "Who is the person in this sentence? {s}", "Extract the name of the person: {s}",
        "Name the person mentioned here: {s}"]),
    Family("city", "extraction", _city, [
        "Which city is mentioned in this sentence? {s}", "Extract the city: {s}", "Name the place in: {s}"]),
    Family("sentiment", "classification", _sentiment, [
        "Is the sentiment of this review positive or negative? {s}",
        "Classify as positive or negative: {s}", "Review: {s}\nPositive or negative?"]),
    Family("topic", "classification", _topic, [
        "Is this sentence about sport, food or weather? {s}", "Topic (sport, food or weather): {s}",
        "Classify the topic of: {s}\nOptions: sport, food, weather"]),
]
CLUSTERS = sorted({f.cluster for f in FAMILIES})


def make_data(n_per_family: int = 40, holdout: list[str] | tuple = (), seed: int = 0,
              n_eval_per_family: int = 12) -> tuple[list[dict], list[dict]]:
    """(train, heldout): train records from families outside `holdout` clusters; heldout records
    (one fixed template each, rotating) from the held-out clusters. Records are
    {"prompt", "completion", "family", "cluster"}."""
    from lmlab.errors import LmlabError

    unknown = set(holdout) - set(CLUSTERS)
    if unknown:
        raise LmlabError(f"unknown task cluster(s) {', '.join(sorted(unknown))}; clusters: {', '.join(CLUSTERS)}")
    if len(set(holdout)) == len(CLUSTERS):
        raise LmlabError("every cluster is held out: nothing left to train on")
    rng = random.Random(seed)
    train, held = [], []
    for fam in FAMILIES:
        out, n = (held, n_eval_per_family) if fam.cluster in holdout else (train, n_per_family)
        for i in range(n):
            fields, answer = fam.make(rng)
            template = fam.templates[i % len(fam.templates)]
            out.append({"prompt": template.format(**fields), "completion": answer,
                        "family": fam.name, "cluster": fam.cluster})
    rng.shuffle(train)
    return train, held


def normalise(text: str) -> str:
    """The answer as a reader would check it: first line, no case, outer spaces or final period."""
    line = text.strip().split("\n")[0].strip().lower()
    return re.sub(r"[.!]+$", "", line).strip().strip("'\"")


def accuracy(lm, records: list[dict], max_new_tokens: int = 24) -> tuple[dict, list[dict]]:
    """Greedy answers of `lm` (an lmlab LM): exact-match accuracy per cluster and the answers."""
    from lmlab.engine.params import SamplingParams

    prompts = [lm.prompt_ids(r["prompt"]) for r in records]
    outs = lm.engine.generate(prompts, SamplingParams(max_tokens=max_new_tokens, temperature=0.0))
    rows, per = [], {}
    for r, o in zip(records, outs):
        answer = o.outputs[0].text
        ok = normalise(answer) == normalise(r["completion"])
        per.setdefault(r["cluster"], []).append(ok)
        rows.append({**r, "answer": answer, "correct": ok})
    scores = {c: sum(v) / len(v) for c, v in sorted(per.items())}
    scores["all"] = sum(r["correct"] for r in rows) / max(len(rows), 1)
    return scores, rows


# ---- `lmlab train sft --data flan`: the data written, the held-out clusters scored before and after

def write_data(cfg) -> tuple[str, list[dict]]:
    """DIR/data/train.jsonl and heldout.jsonl from cfg.flan: (the training file, the held-out records)."""
    import json
    from pathlib import Path

    train, held = make_data(cfg.flan.per_family, cfg.flan.holdout, cfg.seed, cfg.flan.eval_per_family)
    out = Path(cfg.output) / "data"
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", held)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"built-in instruction data: {len(train)} training records from clusters outside "
          f"{', '.join(cfg.flan.holdout)}; {len(held)} held-out records -> {out}")
    return str(out / "train.jsonl"), held


def score(model, tokenizer, folder, held: list[dict]) -> tuple[dict, list[dict]]:
    """`accuracy` of a model in training (its train/eval mode kept)."""
    import torch

    from lmlab.lm import LM

    was_training = model.training
    with torch.no_grad():
        scores, rows = accuracy(LM(model.eval(), tokenizer, folder), held)
    model.train(was_training)
    return scores, rows


def report(before, after, cfg) -> dict:
    """Tables of the scores before and after, DIR/flan.json, and the result's accuracies."""
    import json
    from pathlib import Path

    from lmlab.report.table import print_table

    (b, b_rows), (a, a_rows) = before, after
    print_table([{"held-out cluster": c, "accuracy before": f"{b[c]:.2f}", "accuracy after": f"{a[c]:.2f}"}
                 for c in b], title="FLAN effect: exact-match accuracy on task clusters never trained on")
    print_table([{"prompt": r0["prompt"], "reference": r0["completion"], "before": r0["answer"].strip()[:60],
                  "after": r1["answer"].strip()[:60]} for r0, r1 in list(zip(b_rows, a_rows))[::max(1, len(b_rows) // 4)]],
                title="sample answers")
    Path(cfg.output, "flan.json").write_text(json.dumps({"before": b, "after": a, "answers_after": a_rows}, indent=1),
                                             encoding="utf-8")
    return {"heldout_accuracy_before": b["all"], "heldout_accuracy_after": a["all"]}
