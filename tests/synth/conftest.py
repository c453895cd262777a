from __future__ import annotations

import json
import random

import pytest


VOCAB = ["".join(random.Random(i).choice("bcdfghjklmnpqrstvwxz") + random.Random(i + 7).choice("aeiou")
                 for _ in range(3)) + str(i) for i in range(400)]


class ScriptedTeacher:
    """A teacher whose answers are a pure function of the request (like a seeded model): new tasks
    numbered by the request's seed, classification decided by a keyword, instances echoed."""

    lm = None

    def __init__(self, fail_after_calls: int | None = None):
        self.calls = 0
        self.fail_after_calls = fail_after_calls

    def _tick(self):
        self.calls += 1
        if self.fail_after_calls is not None and self.calls > self.fail_after_calls:
            from lmlab.errors import LmlabError

            raise LmlabError("teacher endpoint failed after 4 tries: HTTP 503")

    def continue_text(self, prompts, max_tokens=128, temperature=0.7, seeds=None, stop=None,
                      stop_at_end_of_turn=False):
        self._tick()
        out = []
        for i, p in enumerate(prompts):
            if p.rstrip().endswith("Class label:"):
                out.append(" positive\nInput: I loved it.")
            elif p.rstrip().endswith("Input:"):
                out.append(" a list of numbers\nOutput: 42")
            else:
                s = seeds[i] if seeds else i
                kind = "Classify the sentiment of" if s % 3 == 0 else "Summarise"
                # every 4th is a copy of an earlier one (the novelty rule must drop it)
                n = s - 4 if s % 4 == 3 and s >= 4 else s
                words = " ".join(random.Random(n).choice(VOCAB) for _ in range(6))
                out.append(f" {kind} {words}.\nTask 10: x")
        return out

    def chat(self, conversations, max_tokens=256, temperature=0.7, seed=0, choice=None):
        self._tick()
        return ["Yes" if "Classify" in c[-1]["content"] else "No" for c in conversations]


@pytest.fixture
def seeds_file(tmp_path):
    rows = [{"id": f"seed_{i}", "instruction": f"Seed task {i}: explain idea {i} to a friend.",
             "instances": [{"input": "", "output": f"Answer {i}."}], "is_classification": i % 4 == 0}
            for i in range(12)]
    p = tmp_path / "seeds.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture
def scripted():
    return ScriptedTeacher
