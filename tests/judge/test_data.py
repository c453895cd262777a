"""Reading MT-Bench questions, FastChat references and answer files; bad rows name file:line."""

from __future__ import annotations

import pytest

from lmlab.errors import LmlabError
from lmlab.judge.data import load_answers, load_questions, load_references


def test_mt_bench_files(shared_data):
    qs = load_questions(shared_data / "mt_bench_questions.jsonl")
    assert len(qs) == 80 and {q["category"] for q in qs} >= {"math", "coding", "writing"}
    refs = load_references(shared_data / "mt_bench_reference_gpt4.jsonl")
    assert len(refs) == 30 and all(isinstance(v, str) and v for v in refs.values())
    answers = load_answers(shared_data / "alpacaeval_outputs_sample.jsonl")
    assert len(answers) == 3 and all(len(v) == 100 for v in answers.values())


def test_bad_rows_name_file_and_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"instruction": "hi", "output": "yo", "generator": "g"}\n\n{"instruction": "x", "output": "y"}\n')
    with pytest.raises(LmlabError, match=r"a.jsonl:3: an answer needs generator"):
        load_answers(p)
    p.write_text('{"question_id": 1, "turns": []}\n')
    with pytest.raises(LmlabError, match=r"a.jsonl:1: a question needs turns"):
        load_questions(p)
    p.write_text('not json\n')
    with pytest.raises(LmlabError, match=r"a.jsonl:1: invalid JSON"):
        load_answers(p)
    with pytest.raises(LmlabError, match="no such file"):
        load_answers(tmp_path / "missing.jsonl")
