"""The project's own preference data, written by code: pairs that differ in one property a
reward model can learn, so a pipeline can be checked end to end offline.

- arithmetic: the right sum or product against a wrong one;
- safety: a short refusal of a harmful request against a (content-free) compliance;
- concise: a direct answer against the same answer buried in filler.
`make_preferences(n)` gives {"prompt", "chosen", "rejected", "kind"} records; with ranked=True
arithmetic prompts come as ranked lists {"prompt", "responses", "scores"} (right and concise >
right and rambling > wrong), PRO's input.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

KINDS = ("arithmetic", "safety", "concise")

_HARMFUL = [
    "break into my neighbour's house", "make a weapon at home", "steal a car without the keys",
    "hack into my ex's email account", "poison someone without getting caught", "shoplift without being seen",
    "forge a doctor's signature", "cheat on my taxes without being audited", "stalk someone online",
    "buy illegal drugs online", "start a fire that looks like an accident", "bully a classmate until they quit",
]
_ASK = ["How do I {}?", "Tell me how to {}.", "What's the best way to {}?", "Explain step by step how to {}."]
_REFUSE = ["I can't help with that. It could hurt someone and is against the law.",
           "Sorry, I won't help with that. If you are in a difficult situation, please talk to someone you trust.",
           "I can't assist with that request because it could cause harm."]
_COMPLY = ["Sure! Here is how to {}. First, get everything you need. Then follow these steps carefully.",
           "Of course. To {}, start by making a plan, then do it when nobody is around.",
           "Great idea! The easiest way to {} is to prepare well and act quickly."]

_FACTS = [
    ("What is the capital of France?", "Paris."), ("What is the capital of Japan?", "Tokyo."),
    ("How many legs does a spider have?", "Eight."), ("What colour is the sky on a clear day?", "Blue."),
    ("What is the largest planet in the solar system?", "Jupiter."), ("How many days are in a week?", "Seven."),
    ("What gas do plants absorb from the air?", "Carbon dioxide."), ("What is the boiling point of water in Celsius?", "100 degrees."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare."), ("What is the freezing point of water in Celsius?", "0 degrees."),
    ("How many continents are there?", "Seven."), ("What is the chemical symbol for gold?", "Au."),
]
_FILLER = ["Well, that is a really interesting question and there is a lot to say about it.",
           "Many people have wondered about this over the years, and it is worth thinking about carefully.",
           "Before I answer, let me say that questions like this are always fun to consider.",
           "To be honest, I could talk about this for a long time, but I will try to keep it focused."]


def _arithmetic(rng: random.Random) -> tuple[str, str, str, str]:
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    op, value = rng.choice([("+", a + b), ("*", a * b), ("-", a - b)])
    wrong = value + rng.choice([-10, -3, -2, -1, 1, 2, 3, 10])
    prompt = rng.choice(["What is {} {} {}?", "Compute {} {} {}.", "Calculate {} {} {}."]).format(a, op, b)
    return prompt, f"{a} {op} {b} = {value}.", f"{a} {op} {b} = {wrong}.", _ramble(rng, f"{a} {op} {b} = {value}.")


def _ramble(rng: random.Random, answer: str) -> str:
    first, second = rng.sample(_FILLER, 2)
    return f"{first} {second} So, the answer is {answer} I hope that helps, and let me know if you have more questions!"


def make_preferences(n: int, seed: int = 0, kinds=KINDS, ranked: bool = False) -> list[dict]:
    """n records, the kinds in turn; deterministic in seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "arithmetic":
            prompt, right, wrong, rambling = _arithmetic(rng)
            if ranked:
                out.append({"prompt": prompt, "responses": [rambling, wrong, right], "scores": [1.0, 0.0, 2.0],
                            "kind": kind})
                continue
            chosen, rejected = right, wrong
        elif kind == "safety":
            act = rng.choice(_HARMFUL)
            prompt = rng.choice(_ASK).format(act)
            chosen, rejected = rng.choice(_REFUSE), rng.choice(_COMPLY).format(act)
        elif kind == "concise":
            prompt, answer = rng.choice(_FACTS)
            chosen, rejected = answer, _ramble(rng, answer)
        else:
            raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "kind": kind})
    return out


def write_jsonl(records: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
