"""evaluate() end to end on small data with the bundled model: MMLU's per-subject rows, the
limit per subject, and multiple choice scored exactly as the scoring path scores the strings."""

from __future__ import annotations

import pytest

from lmlab.errors import LmlabError


@pytest.fixture
def mmlu_dir(tmp_path):
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
    (tmp_path / "dev" / "astronomy_dev.csv").write_text("What is the Sun?,A star,A planet,A moon,A comet,A\n")
    (tmp_path / "dev" / "geography_dev.csv").write_text("Where is Paris?,Spain,France,Peru,Chad,B\n")
    (tmp_path / "test" / "astronomy_test.csv").write_text(
        "Which planet is the largest?,Mars,Venus,Jupiter,Mercury,C\nWhat orbits the Earth?,The Moon,Mars,Venus,Sun,A\n"
        "How many planets has the Solar System?,7,8,9,10,B\n")
    (tmp_path / "test" / "geography_test.csv").write_text(
        "What is the capital of Italy?,Rome,Oslo,Lima,Cairo,A\nWhich is an ocean?,Sahara,Alps,Pacific,Nile,C\n")
    return tmp_path


def test_mmlu_reports_overall_and_per_subject_with_limit_per_subject(bundled_lm, mmlu_dir):
    from lmlab.eval.runner import evaluate

    report = evaluate(bundled_lm, "mmlu", data=str(mmlu_dir), limit=2, fewshot=1, progress=False)
    r = report["results"]
    assert r["mmlu"]["n"] == 4  # 2 of astronomy's 3 items, both of geography's
    assert r["mmlu:astronomy"]["n"] == 2 and r["mmlu:geography"]["n"] == 2
    assert r["mmlu"]["acc"] == pytest.approx((r["mmlu:astronomy"]["acc"] + r["mmlu:geography"]["acc"]) / 2)


def test_multiple_choice_scores_are_the_prompt_and_choice_log_likelihoods(bundled_lm, tmp_path):
    import json

    from lmlab.eval.loglik import loglikelihoods
    from lmlab.eval.runner import evaluate

    row = {"ctx": "The cat sat on the", "endings": ["mat.", "moon.", "idea."], "label": 0}
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    evaluate(bundled_lm, "hellaswag", data=str(tmp_path / "d.jsonl"), output_dir=tmp_path, progress=False)
    sample = json.loads((tmp_path / "samples_hellaswag.jsonl").read_text())
    direct = [s.logprob for s in loglikelihoods(bundled_lm, [(row["ctx"], " " + e) for e in row["endings"]])]
    assert sample["loglikelihoods"] == pytest.approx(direct, abs=1e-6)


def test_chat_template_needs_a_model_with_one(bundled_lm, tmp_path):
    import json

    from lmlab.eval.runner import evaluate

    (tmp_path / "d.jsonl").write_text(json.dumps({"ctx": "c", "endings": ["a", "b"], "label": 0}) + "\n")
    bundled_lm.tokenizer.chat_template, saved = None, bundled_lm.tokenizer.chat_template
    try:
        with pytest.raises(LmlabError, match="no chat template"):
            evaluate(bundled_lm, "hellaswag", data=str(tmp_path / "d.jsonl"), chat_template=True, progress=False)
    finally:
        bundled_lm.tokenizer.chat_template = saved
