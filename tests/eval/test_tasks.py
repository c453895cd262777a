"""Tasks and data: bad input names the file and the line; built-in layouts (HellaSwag, ARC,
MMLU CSV, GSM8K) render the prompts lm-eval renders; YAML tasks need no Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmlab.errors import LmlabError
from lmlab.eval.data import load_records
from lmlab.eval.tasks import builtin, get_task, load_mmlu, make_items, mmlu_fewshot_pool


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _items(task, path):
    return make_items(task, (task.loader or load_records)(str(path), None))


GOOD = {"ctx": "A man sits. he", "endings": ["runs.", "sleeps."], "label": 1}


@pytest.mark.parametrize("bad_row, message", [
    ({"ctx": "x", "label": 0}, "missing field 'endings'"),
    ({"endings": ["a", "b"], "label": 0}, "missing field"),
    ({"ctx": "x", "endings": ["a", "b"], "label": 2}, "label 2 out of range for 2 choices"),
    ({"ctx": "x", "endings": ["a", "b"], "label": -1}, "label -1 out of range"),
    ({"ctx": "x", "endings": [], "label": 0}, "empty choice list"),
    ({"ctx": "x", "endings": ["a", ""], "label": 0}, "non-empty strings"),
])
def test_bad_hellaswag_items_name_file_and_line(tmp_path, bad_row, message):
    path = _jsonl(tmp_path / "hs.jsonl", [GOOD, GOOD, bad_row])
    with pytest.raises(LmlabError, match=message) as e:
        _items(builtin("hellaswag"), path)
    assert f"{path}:3:" in str(e.value)


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "hs.jsonl", [GOOD, "{not json"])
    with pytest.raises(LmlabError, match=rf"{path}:2: invalid JSON"):
        load_records(path)


def test_hellaswag_from_the_raw_hf_layout_uses_lm_eval_preprocessing(tmp_path):
    row = {"activity_label": "Baking cookies", "ctx_a": "A woman mixes flour.", "ctx_b": "she",
           "endings": ["puts the tray in the oven [title] Done.", "eats it."], "label": "0"}
    (item,) = _items(builtin("hellaswag"), _jsonl(tmp_path / "raw.jsonl", [row]))
    assert item.text == "Baking cookies: A woman mixes flour. She"
    assert item.choices == ["puts the tray in the oven. Done.", "eats it."]
    assert item.gold == 0


def test_arc_hf_and_ai2_layouts_give_the_same_item(tmp_path):
    hf = {"question": "Which is a gas?", "choices": {"text": ["ice", "steam"], "label": ["A", "B"]},
          "answerKey": "B"}
    ai2 = {"question": {"stem": "Which is a gas?", "choices": [{"text": "ice", "label": "A"},
                                                                 {"text": "steam", "label": "B"}]},
           "answerKey": "B"}
    a, b = _items(builtin("arc"), _jsonl(tmp_path / "arc.jsonl", [hf, ai2]))
    assert a.text == b.text == "Question: Which is a gas?\nAnswer:"
    assert a.choices == b.choices == ["ice", "steam"] and a.gold == b.gold == 1


def test_arc_answer_key_outside_the_labels_is_an_error(tmp_path):
    row = {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}
    with pytest.raises(LmlabError, match=r"arc.jsonl:1: answerKey 'E'"):
        _items(builtin("arc"), _jsonl(tmp_path / "arc.jsonl", [row]))


def _mmlu_dir(tmp_path):
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
    (tmp_path / "dev" / "astronomy_dev.csv").write_text(
        "What is the Sun?,A star,A planet,A moon,A comet,A\n"
        "\"Which planet is red, mostly?\",Venus,Mars,Earth,Jupiter,B\n")
    (tmp_path / "test" / "astronomy_test.csv").write_text("How many moons has Mars?,0,1,2,3,C\n")
    (tmp_path / "test" / "virology_test.csv").write_text("Is a virus alive?,Yes,No,Sometimes,Unknown,D\n"
                                                        "Bad row,a,b,c,d,E\n")
    return tmp_path


def test_mmlu_per_subject_csv_layout_letter_prompt(tmp_path):
    root = _mmlu_dir(tmp_path)
    records = load_mmlu(str(root / "test" / "astronomy_test.csv"))
    (item,) = make_items(builtin("mmlu"), records)
    assert item.text == "How many moons has Mars?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
    assert item.choices == ["A", "B", "C", "D"] and item.gold == 2
    assert item.record.group == "astronomy"
    pool = mmlu_fewshot_pool(str(root))
    assert [r.fields["question"] for r in pool] == ["What is the Sun?", "Which planet is red, mostly?"]


def test_mmlu_cloze_format_scores_the_answer_texts(tmp_path):
    root = _mmlu_dir(tmp_path)
    (item,) = make_items(builtin("mmlu", "cloze"), load_mmlu(str(root / "test" / "astronomy_test.csv")))
    assert item.text == "Question: How many moons has Mars?\nAnswer:"
    assert item.choices == ["0", "1", "2", "3"]


def test_mmlu_bad_answer_letter_names_file_and_line(tmp_path):
    root = _mmlu_dir(tmp_path)
    with pytest.raises(LmlabError, match=r"virology_test.csv:2: answer must be A, B, C or D"):
        load_mmlu(str(root))


def test_gsm8k_fields_strip_calculator_annotations(tmp_path):
    row = {"question": "Q?", "answer": "She has 16 - 3 = <<16-3=13>>13 eggs.\nSo 13 * 2 = $<<13*2=26>>26.\n#### 26"}
    (item,) = _items(builtin("gsm8k"), _jsonl(tmp_path / "g.jsonl", [row]))
    assert item.target == "26"
    assert item.fields["reasoning"] == "She has 16 - 3 = 13 eggs. So 13 * 2 = $26."


def test_gsm8k_answer_without_final_number_is_an_error(tmp_path):
    path = _jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "answer": "no number line"}])
    with pytest.raises(LmlabError, match=rf"{path}:1: answer has no '#### <number>' line"):
        _items(builtin("gsm8k"), path)


def test_yaml_task_multiple_choice_with_literal_choices_and_text_target(tmp_path):
    _jsonl(tmp_path / "yn.jsonl", [{"q": "Is water wet?", "a": "yes"}, {"q": "Is fire cold?", "a": "no"}])
    (tmp_path / "yn.yaml").write_text(
        "type: multiple_choice\ndata: yn.jsonl\nprompt: \"Q: {{q}}\\nA:\"\nchoices: [yes, no]\n"
        "target: \"{{a}}\"\nmetrics: [acc]\n")
    task = get_task(str(tmp_path / "yn.yaml"))
    assert task.name == "yn" and task.data == str(tmp_path / "yn.jsonl")
    items = _items(task, task.data)
    assert [i.text for i in items] == ["Q: Is water wet?\nA:", "Q: Is fire cold?\nA:"]
    assert [i.gold for i in items] == [0, 1]


def test_yaml_choices_from_a_jinja_expression(tmp_path):
    _jsonl(tmp_path / "d.jsonl", [{"q": "2+2?", "opts": {"x": "4", "y": "5"}, "label": 0}])
    (tmp_path / "t.yaml").write_text(
        "type: multiple_choice\ndata: d.jsonl\nprompt: \"{{q}}\"\nchoices: \"{{[opts.x, opts.y]}}\"\n")
    (item,) = _items(get_task(str(tmp_path / "t.yaml")), tmp_path / "d.jsonl")
    assert item.choices == ["4", "5"]


def test_yaml_prompt_file_is_read_relative_to_the_task(tmp_path):
    (tmp_path / "p.txt").write_text("Translate: {{src}}")
    (tmp_path / "t.yaml").write_text("type: generate\nprompt_file: p.txt\ntarget: \"{{ref}}\"\n"
                                     "metrics: [exact_match, bleu]\n")
    assert get_task(str(tmp_path / "t.yaml")).text == "Translate: {{src}}"


@pytest.mark.parametrize("body, message", [
    ("type: multiple_choice\nchoices: [a]\nmetrics: [bleu]\n", "unknown metric 'bleu' for multiple_choice"),
    ("type: multiple_choice\nprompt: x\n", "needs `choices`"),
    ("prompt: x\n", "missing `type`"),
    ("type: generate\npromt: x\n", "unknown key promt"),
    ("type: [unclosed\n", r"t\.yaml:\d+: invalid YAML"),
])
def test_bad_yaml_tasks_are_explained(tmp_path, body, message):
    (tmp_path / "t.yaml").write_text(body)
    with pytest.raises(LmlabError, match=message):
        get_task(str(tmp_path / "t.yaml"))


def test_csv_and_parquet_records_remember_their_lines(tmp_path):
    (tmp_path / "d.csv").write_text('q,label\n"multi\nline",1\nplain,0\n')
    assert [r.where for r in load_records(tmp_path / "d.csv")] == [f"{tmp_path}/d.csv:3", f"{tmp_path}/d.csv:4"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": ["a", "b"]}), tmp_path / "d.parquet")
    assert [r.fields["q"] for r in load_records(tmp_path / "d.parquet")] == ["a", "b"]


def test_unknown_task_and_missing_file_are_errors():
    with pytest.raises(LmlabError, match="unknown task 'hellaswagg'"):
        get_task("hellaswagg")
    with pytest.raises(LmlabError, match="no such file"):
        load_records("/nonexistent/file.jsonl")


RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes" / "eval").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_tasks_load_and_render_every_item(recipe):
    task = get_task(str(recipe))
    if not Path(task.data).exists():
        pytest.skip(f"{task.data} is absent (../shared/data only on CI and developer machines)")
    items = _items(task, task.data)
    assert items and all(i.text for i in items)


def test_hub_dataset_offline_is_one_clear_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmlabError, match=r"hf:nobody/nothing: cannot load .*give a local file"):
        load_records("hf:nobody/nothing", "test")
