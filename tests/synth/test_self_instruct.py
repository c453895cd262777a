"""Self-Instruct: the demonstration mix, output-first instances for classification tasks, the
filters, and a resumed run that loses and duplicates nothing."""

from __future__ import annotations

import json
import random

import pytest

from lmlab.errors import LmlabError
from lmlab.synth import self_instruct as si
from lmlab.synth.records import Output


def test_eight_demonstrations_six_seed_and_two_generated_once_two_exist():
    seeds = [f"seed {i}" for i in range(20)]
    rng = random.Random(0)
    only_seed = si.demonstrations(seeds, ["gen 0"], rng)
    assert len(only_seed) == 8 and all(d.startswith("seed") for d in only_seed)
    mixed = si.demonstrations(seeds, [f"gen {i}" for i in range(5)], rng)
    assert len(mixed) == 8 and len(set(mixed)) == 8
    assert sum(d.startswith("gen") for d in mixed) == 2 and sum(d.startswith("seed") for d in mixed) == 6
    prompt = si.task_prompt(mixed)
    assert prompt.startswith(si.TASK_LIST_HEADER) and prompt.endswith("Task 9:")
    assert all(f"Task {i}: {d}\n" in prompt for i, d in enumerate(mixed, 1))


def test_classification_tasks_get_their_instance_output_first_and_others_input_first():
    seeds = [si.Seed("Is this spam?", "Win money now", "spam", True),
             si.Seed("Write a haiku.", "", "An old pond...", False)]
    rng = random.Random(0)
    cls = si.instance_prompt("Label the mood of a tweet.", True, seeds, rng)
    gen = si.instance_prompt("Write a limerick.", False, seeds, rng)
    assert cls.endswith("Task: Label the mood of a tweet.\nClass label:")
    assert "Class label: spam\nInput: Win money now" in cls  # label before input in the demos too
    assert gen.endswith("Task: Write a limerick.\nInput:") and "Output: An old pond..." in gen
    assert si.parse_instance(" positive\nInput: I loved it.", True) == ("I loved it.", "positive")
    assert si.parse_instance(" 3, 4\nOutput: 7", False) == ("3, 4", "7")
    assert si.parse_instance(" no output here", False) is None


def test_a_task_is_the_continuation_up_to_the_next_number():
    assert si.parse_task(" Sort these words.\nTask 10: other") == "Sort these words."
    assert si.parse_task("  Name two   rivers.\n\nmore") == "Name two rivers."


def test_a_run_writes_n_novel_records_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path, seeds_file, scripted):
    seeds = si.read_seeds(seeds_file)
    full = Output(tmp_path / "full.jsonl")
    summary = si.generate(scripted(), seeds, 20, full, batch=4, progress=False)
    full.close()
    rows = [json.loads(l) for l in (tmp_path / "full.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and summary["kept"] == 20
    assert len({r["instruction"] for r in rows}) == 20  # nothing twice
    assert summary["dropped: similar (ROUGE-L)"] > 0  # the planted copies were caught
    assert all(r["output"] == ("positive" if r["is_classification"] else "42") for r in rows)
    assert any(r["is_classification"] for r in rows) and not all(r["is_classification"] for r in rows)

    # killed after a few teacher calls (an endpoint going down), then resumed
    part = Output(tmp_path / "part.jsonl")
    with pytest.raises(LmlabError, match="503"):
        si.generate(scripted(fail_after_calls=7), seeds, 20, part, batch=4, progress=False)
    part.close()
    written = (tmp_path / "part.jsonl").read_text().splitlines()
    assert 0 < len(written) < 20  # what was written before the failure is kept
    resumed = Output(tmp_path / "part.jsonl")
    assert resumed.resumed
    si.generate(scripted(), seeds, 20, resumed, batch=4, progress=False)
    resumed.close()
    assert (tmp_path / "part.jsonl").read_text() == (tmp_path / "full.jsonl").read_text()


def test_bad_seed_files_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"instruction": \n')
    with pytest.raises(LmlabError, match=r"bad.jsonl:2: not valid JSON"):
        si.read_seeds(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LmlabError, match="no seed tasks"):
        si.read_seeds(empty)
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"text": "x"}\n')
    with pytest.raises(LmlabError, match=r"nofield.jsonl:1: missing field instruction"):
        si.read_seeds(nofield)


def test_the_filters_drop_what_a_text_model_cannot_do():
    from lmlab.synth.filters import why_dropped

    assert why_dropped("Draw a picture of a cat.") == "keyword (draw)"
    assert why_dropped("Hi") == "too short"
    assert why_dropped("- list three fruits please") == "starts with punctuation"
    assert why_dropped("Write a program that sorts numbers.") == "asks for a program"
    assert why_dropped("List three fruits that are red.") is None
