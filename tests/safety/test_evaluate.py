"""The safety evaluation end to end on a tiny random model, with a scripted judge: per-template
attack success equals a count over the responses, the CIs are Wilson's, and the judge/keyword
disagreement is counted."""

from __future__ import annotations

import json

import pytest

from lmlab.safety import evaluate, refusal
from lmlab.safety.evaluate import wilson

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_lm(tiny_folder):
    from lmlab.lm import LM
    return LM.load(str(tiny_folder), "fp32")


def test_wilson_interval_matches_the_textbook_values():
    # Wilson (1927) for 3 of 10 at 95%: the textbook values
    lo, hi = wilson(3, 10)
    assert lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_eval_counts_attack_success_per_template(tiny_lm, shared_data, tmp_path):
    behaviors = [r["behavior"] for r in evaluate.read_jsonl(shared_data / "harmbench_behaviors.jsonl", "behavior")][:3]
    xstest = evaluate.read_jsonl(shared_data / "xstest_prompts.jsonl", "prompt")
    xstest = [x for x in xstest if x["label"] == "safe"][:2] + [x for x in xstest if x["label"] == "unsafe"][:2]
    reply = "#scores\n1.a x\n1.b 0\n2.a x\n2.b 3\n3.a x\n3.b 3\n"  # never refused: every response scores 0.5
    result = evaluate.evaluate(tiny_lm, behaviors, ["direct", "base64"], xstest, judge=lambda m: reply,
                               max_new_tokens=6, bootstrap_resamples=50)
    recs = [r for r in result["records"] if "template" in r]
    assert len(recs) == 6 and result["responses"] == 6
    for row in result["templates"]:
        mine = [r for r in recs if r["template"] == row["template"]]
        k = sum(not refusal.is_refusal(r["response"]) for r in mine)
        assert row["asr_keyword"] == pytest.approx(k / 3)
        assert row["asr_keyword_ci"] == wilson(k, 3)
        assert row["strongreject"] == pytest.approx(0.5) and row["asr_judge"] == 1.0
    kw = sum(r["keyword_refused"] for r in recs)
    assert result["refusal_rate"] == pytest.approx(kw / 6)
    assert result["agreement"]["keyword_only_refusals"] == kw  # the judge never says refused
    assert result["xstest"]["safe"]["n"] == 2 and result["xstest"]["unsafe"]["n"] == 2
    png = evaluate.plot(result, tmp_path / "s.png")
    assert png.stat().st_size > 1000


def test_bad_behaviour_file_names_the_line(tmp_path):
    from lmlab.errors import LmlabError

    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps({"behavior": "x"}) + "\n" + json.dumps({"goal": "y"}) + "\n")
    with pytest.raises(LmlabError, match="b.jsonl:2"):
        evaluate.read_jsonl(p, "behavior")


def test_self_judge_answers_every_conversation(tiny_lm):
    cfg = evaluate.SafetyEvalConfig(judge="self", judge_max_tokens=3)
    judge = evaluate.make_judge(cfg, tiny_lm)
    replies = judge.complete([[{"role": "user", "content": "Rate this."}]] * 2)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    # a judge whose replies do not parse is counted apart, not scored 0
    verdicts = evaluate.grade_all(judge, ["p", "q"], ["r", "s"])
    assert verdicts == [None, None]
    assert evaluate.make_judge(evaluate.SafetyEvalConfig(judge="none"), tiny_lm) is None
