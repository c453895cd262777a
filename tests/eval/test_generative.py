"""Generative tasks: answer extraction, exact match, and GSM8K runs through the engine (plain,
zero-shot CoT's two stages, self-consistency's vote) on the bundled model, a few tokens each."""

from __future__ import annotations

import json

import pytest

from lmlab.eval.generative import exact_match, extract

RESPONSE = "Janet has 16 - 3 = 13 eggs. She sells them for $2 each, so 13 * 2 = $26.\n#### 26"


@pytest.mark.parametrize("how, text, want", [
    ("gsm8k", RESPONSE, "26"),
    ("gsm8k", "So she makes 1,250 dollars. The answer is 1,250.", "1250"),
    ("gsm8k", "The answer is $18.", "18"),
    ("gsm8k", "first 3 then 4.5 finally", "4.5"),
    ("gsm8k", "no digits at all", None),
    ("last_number", "from -3 to 7.", "7"),
    ("first_number", " 42, not 43", "42"),
    ("none", "  Paris \n", "Paris"),
    ({"regex": r"Answer: (\w+)"}, "x Answer: B because", "B"),
    ({"regex": r"Answer: \w+", "group": 0}, "x Answer: B because", "Answer: B"),
    ({"regex": r"Answer: (\w+)"}, "nothing", None),
])
def test_answer_extraction(how, text, want):
    assert extract(text, how) == want


@pytest.mark.parametrize("pred, target, want", [
    ("18", "18", 1.0), ("18.0", "18", 1.0), ("$1,000.", "1000", 1.0), ("17", "18", 0.0),
    (None, "18", 0.0), (" Paris ", "Paris", 1.0), ("paris", "Paris", 0.0),
])
def test_exact_match_compares_numbers_as_numbers(pred, target, want):
    assert exact_match(pred, target) == want


@pytest.fixture(scope="module")
def gsm8k_file(tmp_path_factory, shared_data):
    path = tmp_path_factory.mktemp("g") / "gsm8k.jsonl"
    path.write_text("\n".join((shared_data / "gsm8k_test_dev200.jsonl").read_text().splitlines()[:3]) + "\n")
    return str(path)


def test_gsm8k_greedy_samples_hold_prompt_response_and_verdict(bundled_lm, gsm8k_file, tmp_path):
    from lmlab.eval.runner import evaluate

    report = evaluate(bundled_lm, "gsm8k", data=gsm8k_file, limit=2, max_new_tokens=8, output_dir=tmp_path,
                      progress=False)
    m = report["results"]["gsm8k"]
    assert m["n"] == 2 and 0.0 <= m["exact_match"] <= 1.0 and "exact_match_stderr" in m
    rows = [json.loads(x) for x in (tmp_path / "samples_gsm8k.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in rows] == [0, 1]
    assert rows[0]["prompt"].startswith("Question: Janet")
    assert rows[0]["target"] == "18"
    assert rows[0]["pred"] == extract(rows[0]["response"], "gsm8k")


def test_zero_shot_cot_runs_a_second_stage_on_the_reasoning(bundled_lm, gsm8k_file):
    from lmlab.eval.prompting import ANSWER_TRIGGER
    from lmlab.eval.runner import evaluate
    from lmlab.eval import generative

    seen = []
    real = generative._generate

    def spy(lm, prompts, params, progress, weight):
        seen.append((prompts, params))
        return real(lm, prompts, params, progress, weight)

    generative._generate = spy
    try:
        evaluate(bundled_lm, "gsm8k", data=gsm8k_file, limit=1, zero_shot_cot=True, max_new_tokens=6,
                 progress=False)
    finally:
        generative._generate = real
    (first, _), (second, params) = seen
    assert first[0].endswith("Answer: Let's think step by step.")
    assert second[0].startswith(first[0]) and second[0].endswith(ANSWER_TRIGGER)
    assert params.temperature == 0 and params.max_tokens == 16


def test_self_consistency_votes_over_n_sampled_paths(bundled_lm, gsm8k_file, tmp_path):
    from lmlab.eval.prompting import majority_vote
    from lmlab.eval.runner import evaluate

    evaluate(bundled_lm, "gsm8k", data=gsm8k_file, limit=1, self_consistency=3, max_new_tokens=6, seed=5,
             output_dir=tmp_path, progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "samples_gsm8k.jsonl").read_text().splitlines()]
    assert len(row["response"]) == len(row["votes"]) == 3
    assert row["votes"] == [extract(r, "gsm8k") for r in row["response"]]
    assert row["pred"] == majority_vote(row["votes"])


def test_yaml_generative_task_reports_reference_metrics(bundled_lm, tmp_path):
    from lmlab.eval import metrics
    from lmlab.eval.runner import evaluate

    rows = [{"q": "What is the capital of France?", "ref": "The capital of France is Paris."},
            {"q": "What colour is the sky?", "ref": "The sky is blue."}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text("type: generate\ndata: d.jsonl\nprompt: \"{{q}}\"\ntarget: \"{{ref}}\"\n"
                                     "until: [\"\\n\"]\nanswer: none\nmetrics: [exact_match, bleu, chrf, rougeL]\n")
    report = evaluate(bundled_lm, str(tmp_path / "t.yaml"), chat_template=True, max_new_tokens=12,
                      output_dir=tmp_path / "out", progress=False)
    m = report["results"]["t"]
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples_t.jsonl").read_text().splitlines()]
    preds, refs = [s["pred"] for s in samples], [r["ref"] for r in rows]
    assert preds == [s["response"].strip() for s in samples]
    assert m["bleu"] == pytest.approx(metrics.bleu(preds, refs))
    assert m["chrf"] == pytest.approx(metrics.chrf(preds, refs))
    assert m["rougeL"] == pytest.approx(metrics.rouge(preds, refs)["rougeL"])
    assert m["bleu_stderr"] is None and m["n"] == 2
