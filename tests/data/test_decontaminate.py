"""Decontamination: documents holding a benchmark item are found, and the item is named by id,
for every kind of file `lmlab eval` reads."""

import json
import random

from lmlab.data.decontaminate import DecontaminateConfig, Index, decontaminate, load_items
from lmlab.data.dedup import simplify

from .corpora import document, write_jsonl


def test_planted_gsm8k_and_hellaswag_items_found_by_id(shared_data, tmp_path):
    gsm = shared_data / "gsm8k_test_dev200.jsonl"
    hs = shared_data / "hellaswag_val_dev500.jsonl"
    g = [json.loads(line) for line in gsm.open()]
    h = [json.loads(line) for line in hs.open()]
    rng = random.Random(0)
    docs = [{"text": document(rng)} for _ in range(6)]
    docs[1]["text"] += "\n" + g[17]["question"]  # a whole question pasted in
    docs[3]["text"] = h[42]["ctx"] + " " + h[42]["endings"][h[42]["label"]] + "\n" + docs[3]["text"]
    words = g[5]["answer"].split()
    docs[4]["text"] += " " + " ".join(words[3:16])  # exactly 13 words of a solution
    cfg = DecontaminateConfig(files=[str(gsm), str(hs)])
    kept, removed = decontaminate(docs, cfg)
    leaked = [r["_leaked"] for r, _ in removed]
    assert leaked[0] == ["gsm8k:17"] and leaked[2] == ["gsm8k:5"]
    # HellaSwag items cut from the same video share their context: all of them are reported
    assert "hellaswag:42" in leaked[1] and all(x.startswith("hellaswag:4") for x in leaked[1])
    assert len(kept) == 3
    flagged, none = decontaminate(docs, DecontaminateConfig(files=[str(gsm)], action="flag"))
    assert not none and [r.get("contamination") for r in flagged][1] == ["gsm8k:17"]


def test_twelve_words_are_not_enough(shared_data):
    g = json.loads((shared_data / "gsm8k_test_dev200.jsonl").open().readline())
    idx = Index((str(shared_data / "gsm8k_test_dev200.jsonl"),), 13)
    words = simplify(g["question"])  # the words the n-grams are made of
    assert idx.match("intro " + " ".join(words[:12]) + " outro") == []
    assert idx.match("intro " + " ".join(words[:13]) + " outro") == ["gsm8k:0"]


def test_humaneval_mmlu_and_yaml_task_files(tmp_path):
    he = write_jsonl(tmp_path / "HumanEval.jsonl", [
        {"task_id": "HumanEval/0", "prompt": "def has_close_elements(numbers, threshold):\n    \"\"\"Check if in "
         "given list of numbers, are any two numbers closer to each other than given threshold.\"\"\"\n",
         "canonical_solution": "    return any(abs(a - b) < threshold for a in numbers for b in numbers)\n",
         "test": "", "entry_point": "has_close_elements"}])
    assert load_items(he)[0].id == "HumanEval/0"
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "astronomy_test.csv").write_text(
        '"Which planet is known as the red planet because of the iron oxide on its surface in our solar system?",'
        'Venus,Mars,Jupiter,Saturn,B\n', encoding="utf-8")
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "What is the name of the longest river that flows "
                                                            "through the country of Egypt into the sea?",
                                                "answer": "Nile"}])
    (tmp_path / "qa.yaml").write_text("name: myqa\ntype: generate\ndata: qa.jsonl\nprompt: '{{question}}'\n"
                                      "target: '{{answer}}'\n", encoding="utf-8")
    files = [str(he), str(tmp_path / "mmlu"), str(tmp_path / "qa.yaml")]
    docs = [{"text": "Solutions: check if in given list of numbers, are any two numbers closer to each other than "
                     "given threshold. Easy."},
            {"text": "Quiz: which planet is known as the red planet because of the iron oxide on its surface?"},
            {"text": "Trivia night. What is the name of the longest river that flows through the country of Egypt "
                     "into the sea? Everyone knew."},
            {"text": "Nothing to see here at all, just an ordinary sentence about rivers and planets."}]
    kept, removed = decontaminate(docs, DecontaminateConfig(files=files))
    assert [r["_leaked"] for r, _ in removed] == [["HumanEval/0"], ["mmlu/astronomy:0"], ["myqa:0"]]
    assert [r["text"][:7] for r in kept] == ["Nothing"]
