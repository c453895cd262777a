"""A tiny recipe on the tiny random Llama (tests/conftest.py `tiny_folder`): every stage the
pipeline has, with step counts and eval slices small enough for a few seconds per run, and
eval data written here (the shared data is not needed)."""

from __future__ import annotations

import json
import random

import pytest
import yaml


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline_inputs")
    rng = random.Random(0)
    words = "the cat sat on a mat and then ran to the red house near the old river".split()
    hellaswag = [{"ctx": "A man walks his dog. He", "endings": ["runs.", "sleeps.", "sings.", "eats."], "label": i % 4}
                 for i in range(3)]
    gsm8k = [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]
    texts = [{"text": " ".join(rng.choice(words) for _ in range(40))} for _ in range(4)]
    hh = [{"chosen": f"\n\nHuman: Tell me about {w}.\n\nAssistant: A {w} is a fine thing.",
           "rejected": f"\n\nHuman: Tell me about {w}.\n\nAssistant: No."} for w in words[:14]]
    return {"hellaswag": _jsonl(d / "hellaswag.jsonl", hellaswag), "gsm8k": _jsonl(d / "gsm8k.jsonl", gsm8k),
            "texts": _jsonl(d / "texts.jsonl", texts), "hh": _jsonl(d / "hh.jsonl", hh)}


@pytest.fixture(scope="session")
def tiny_recipe(tiny_folder, tiny_inputs, tiny_data):
    """dict -> a recipe (as a dict) on the tiny model; stages given override the defaults here."""
    def make(stages=("sft", "preference", "eval", "package"), name="tiny"):
        full = {
            "adapt": {"corpus": "stories:40", "general": tiny_inputs["texts"], "general_limit": 2, "max_steps": 2,
                      "batch_size": 2, "max_length": 64, "save_every": 1, "lr": 1e-3},
            "sft": {"data": str(tiny_data), "max_steps": 4, "batch_size": 2, "max_length": 64, "save_every": 2},
            "preference": {"data": tiny_inputs["hh"], "limit": 8, "eval_limit": 4, "max_steps": 2, "batch_size": 2,
                           "max_length": 64, "save_every": 1},
            "eval": {"hellaswag": 2, "hellaswag_data": tiny_inputs["hellaswag"], "gsm8k": 1,
                     "gsm8k_data": tiny_inputs["gsm8k"], "gsm8k_max_new_tokens": 4, "flan_per_family": 1,
                     "perplexity": tiny_inputs["texts"], "perplexity_limit": 3, "prompts": ["Say hi", "Name a colour"],
                     "max_new_tokens": 4, "bootstrap": 50},
            "package": {"quantise": ["int8"], "perplexity": tiny_inputs["texts"], "perplexity_limit": 2, "gguf": False},
        }
        return {"name": name, "model": str(tiny_folder), "device": "cpu", "stages": {s: full[s] for s in stages}}
    return make


@pytest.fixture
def write_recipe(tmp_path):
    def write(recipe: dict, name="recipe.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path
    return write
