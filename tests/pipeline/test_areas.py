"""The stages that call the other areas, when those are installed: data curation drops an SFT
record copied from the eval set; judge win rates and the arena leaderboard come from the judged
battles (a stand-in judge that prefers the longer answer, so the order is known); safety scores
every model. Without an area the stage or section is reported as not available."""

from __future__ import annotations

import json
import re

import pytest


def _run(path, out):
    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import run_pipeline

    return run_pipeline(load_recipe(path), out, progress=False)


class LongerAnswerJudge:
    """A judge backend that prefers the longer answer: [[A]], [[B]] or [[C]] for equal length."""
    name = "longer"

    def complete(self, conversations, **kw):
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A", text, re.S)[1]
            b = re.search(r"Assistant B's Answer\]\n(.*?)\n\[The End of Assistant B", text, re.S)[1]
            out.append("[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]")
        return out


def test_judge_arena_and_safety_sections(tiny_recipe, write_recipe, tmp_path, monkeypatch, shared_data):
    pytest.importorskip("lmlab.judge.backends")
    pytest.importorskip("lmlab.arena.ratings")
    pytest.importorskip("lmlab.safety.evaluate")
    import lmlab.judge.backends as backends
    import lmlab.judge.data as jdata

    calls = []

    def answers(lm, questions, **kw):  # model k (in eval order) answers with k + 1 words
        calls.append(1)
        return {q["question_id"]: " ".join(["word"] * len(calls)) for q in questions}

    monkeypatch.setattr(jdata, "generate_answers", answers)
    monkeypatch.setattr(backends, "backend_from", lambda *a, **kw: LongerAnswerJudge())
    recipe = tiny_recipe(stages=("sft", "preference", "eval"))
    recipe["stages"]["eval"].update(judge_prompts=3, safety_limit=2, safety_templates=["direct"],
                                    judge_questions=str(shared_data / "mt_bench_questions.jsonl"),
                                    safety_behaviors=str(shared_data / "harmbench_behaviors.jsonl"),
                                    safety_xstest=str(shared_data / "xstest_prompts.jsonl"))
    ev = _run(write_recipe(recipe), tmp_path / "out")["stages"]["eval"]["result"]
    judge = {r["model"]: r for r in ev["judge"]["rows"]}
    assert judge["sft"]["win rate vs base"]["value"] == 1.0 and judge["preference"]["wins"] == 3
    assert ev["metrics"]["sft"]["judge win rate vs base"]["n"] == 3
    board = ev["arena"]["rows"]
    assert [r["model"] for r in board] == ["preference", "sft", "base"]
    assert (tmp_path / "out" / "stages" / "eval" / "arena.png").is_file()
    safety = {r["model"]: r for r in ev["safety"]["rows"]}
    assert set(safety) == {"base", "sft", "preference"}
    assert 0 <= safety["base"]["attack success (keyword)"]["value"] <= 1
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4  # the arena leaderboard too


def test_data_stage_drops_an_sft_record_copied_from_the_eval_set(tiny_recipe, write_recipe, tmp_path, tiny_inputs):
    pytest.importorskip("lmlab.data.pipeline")
    hellaswag = json.loads(open(tiny_inputs["hellaswag"]).readline())
    leaked = {"prompt": "Continue: " + hellaswag["ctx"] + " " + hellaswag["endings"][0] + " and then some more words",
              "completion": "ok"}
    clean = [{"prompt": f"Say the number {i} in words please now", "completion": str(i)} for i in range(6)]
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps(r) + "\n" for r in [leaked] + clean + clean[:1]))
    recipe = tiny_recipe(stages=("sft",))
    recipe["stages"]["data"] = {"sft": str(sft), "preference": tiny_inputs["hh"], "ngram": 5}
    recipe["stages"]["eval"] = {"hellaswag": 2, "hellaswag_data": tiny_inputs["hellaswag"], "gsm8k": 0,
                                "flan_per_family": 0, "perplexity": "", "judge": False, "arena": False, "max_new_tokens": 2,
                                "safety": False, "prompts": []}
    recipe["stages"]["sft"]["data"] = str(sft)
    report = _run(write_recipe(recipe), tmp_path / "out")
    cur = report["stages"]["data"]["result"]["curation"]["sft"]
    assert cur["removed"] == {"decontaminate": 1, "exact_dedup": 1} and cur["kept"] == 6
    assert report["stages"]["sft"]["result"]["data"] == report["stages"]["data"]["result"]["sft"]
