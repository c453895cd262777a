"""Magpie's pre-query template for two chat templates, AlpaGasus's score parsing and selection,
near-duplicate removal through the data stage's MinHash, and real runs on the bundled model."""

from __future__ import annotations

import json

import pytest

from lmlab.errors import LmlabError
from lmlab.synth import alpagasus, magpie

LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def test_pre_query_template_of_the_bundled_models_chat_template(bundled_lm):
    t = magpie.pre_query_template(bundled_lm.tokenizer)
    assert t == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                 "<|im_end|>\n<|im_start|>user\n")
    assert magpie.pre_query_template(bundled_lm.tokenizer, system="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_pre_query_template_of_a_llama3_style_template():
    from tokenizers import Tokenizer as Backend, models

    from lmlab.tokenizer import Tokenizer

    tok = Tokenizer(Backend(models.WordLevel({"a": 0}, unk_token="a")), {"bos_token": "<|begin_of_text|>"}, LLAMA3)
    assert magpie.pre_query_template(tok) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"


def test_scores_parse_from_the_first_line_only_and_unparsed_ones_are_counted():
    assert alpagasus.parse_score("4.5\nThe response is accurate.") == 4.5
    assert alpagasus.parse_score("Score: 3 out of 5\nbecause") == 3.0
    assert alpagasus.parse_score("I cannot rate this.\n5") is None
    assert alpagasus.parse_score("") is None
    assert alpagasus.parse_score("7") is None  # outside 0-5
    records = [{"instruction": f"q{i}", "output": "a", "generator": g} for i, g in enumerate("xxyy")]
    kept, summary = alpagasus.select(records, [5.0, None, 4.5, 2.0], 4.5)
    assert [r["instruction"] for r in kept] == ["q0", "q2"] and kept[0]["score"] == 5.0
    assert summary == {"rated": 4, "unparsed": 1, "below threshold": 1, "kept": 2}
    assert alpagasus.keep_rate_by(records, [5.0, None, 4.5, 2.0], 4.5, "generator") == {"x": 0.5, "y": 0.5}


def test_near_duplicates_go_through_the_data_stages_minhash():
    from lmlab.synth.dedup import near_duplicates

    base = ("Explain how photosynthesis turns sunlight water and carbon dioxide into sugar and oxygen inside "
            "the leaves of plants and why the process matters for nearly every living thing on the planet today")
    texts = [base, base + " Answer in detail.", "Write a haiku about the autumn moon over a quiet lake at night",
             base + "."]
    assert near_duplicates(texts) == {1, 3}


def test_the_judges_scores_always_parse_under_constrained_decoding(bundled_lm, tmp_path):
    from lmlab.judge.backends import LocalBackend

    judge = LocalBackend(bundled_lm, cache=None, progress=False)
    if not judge.guided:
        pytest.skip("the engine has no guided_choice here")
    records = [{"instruction": "What is 2 + 2?", "input": "", "output": "4"},
               {"instruction": "Name a colour.", "input": "", "output": "The sky is made of cheese."},
               {"instruction": "Translate 'cat' to French.", "input": "", "output": "chat"}]
    scores = alpagasus.rate(judge, records)
    assert all(s is not None and s in [x / 2 for x in range(11)] for s in scores)


def test_magpie_and_self_instruct_run_on_the_bundled_model_and_resume(bundled_lm, tmp_path, shared_data):
    from lmlab.judge.backends import LocalBackend
    from lmlab.synth import self_instruct
    from lmlab.synth.records import Output
    from lmlab.synth.teacher import Teacher

    teacher = Teacher(LocalBackend(bundled_lm, cache=None, progress=False))
    out = Output(tmp_path / "magpie.jsonl")
    summary = magpie.generate(teacher, 3, out, batch=4, max_query_tokens=40, max_tokens=24, progress=False)
    out.close()
    rows = [json.loads(l) for l in (tmp_path / "magpie.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and summary["kept"] == 3
    assert all(r["instruction"] and r["output"] and r["source"] == "magpie" for r in rows)
    seeds = self_instruct.read_seeds(shared_data / "self_instruct_seed_tasks.jsonl")
    assert len(seeds) == 175 and sum(s.is_classification for s in seeds) > 0
    out = Output(tmp_path / "si.jsonl")
    self_instruct.generate(teacher, seeds, 2, out, batch=4, max_tokens=32, progress=False)
    out.close()
    assert len((tmp_path / "si.jsonl").read_text().splitlines()) == 2


def test_bad_input_is_refused_before_any_model_loads(tmp_path):
    from lmlab.synth import SynthConfig, run

    with pytest.raises(LmlabError, match="needs --seeds"):
        run("self-instruct", SynthConfig(out=str(tmp_path / "o.jsonl")))
    with pytest.raises(LmlabError, match="unknown synth command 'evolve'"):
        run("evolve", SynthConfig(out=str(tmp_path / "o.jsonl")))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LmlabError, match="no records"):
        run("filter", SynthConfig(out=str(tmp_path / "o.jsonl"), data=str(empty)))
