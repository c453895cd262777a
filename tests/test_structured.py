"""lmlab.structured: parse (with json-repair for syntax), validate (jsonschema), regenerate with
the error fed back; the result names every attempt and why it failed."""

from __future__ import annotations

import json

import jsonschema
import pytest

from lmlab import structured
from lmlab.errors import LmlabError

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def test_parse_reads_fenced_json_and_repairs_syntax_like_json_repair():
    import json_repair

    assert structured.parse_json('Here:\n```json\n{"a": 1}\n```\nDone.') == ({"a": 1}, None, False)
    broken = '{"a": 1, "b": [1, 2'
    value, why, repaired = structured.parse_json(broken)
    assert why is None and repaired and value == json_repair.repair_json(broken, return_objects=True)
    value, why, repaired = structured.parse_json("no json here at all")
    assert value is None and why.startswith("not valid JSON") and not repaired


def test_validate_names_the_path_and_agrees_with_jsonschema():
    bad = {"name": "Bo", "age": "old"}
    why = structured.validate(bad, PERSON)
    assert why.startswith("at $.age:") and "'old' is not of type 'integer'" in why
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, PERSON)
    assert structured.validate({"name": "Bo", "age": 3}, PERSON) is None
    assert "[1]" in structured.validate([1, "x"], {"type": "array", "items": {"type": "integer"}})


def test_check_regex_choice_and_json_object():
    assert structured.check("2024-01-05", structured.Spec(regex=r"\d{4}-\d{2}-\d{2}"))[1] is None
    assert "does not match" in structured.check("5 Jan", structured.Spec(regex=r"\d{4}-\d{2}-\d{2}"))[1]
    assert structured.check(" no", structured.Spec(choice=["yes", "no"])) == ("no", None, False)
    assert "not one of" in structured.check("maybe", structured.Spec(choice=["yes", "no"]))[1]
    assert "is not of type 'object'" in structured.check("[1]", structured.Spec(json_object=True))[1]


@pytest.mark.parametrize("kw, message", [
    ({}, "exactly one"),
    (dict(regex="a", choice=["a"]), "exactly one"),
    (dict(json_schema="{"), "json_schema is not valid JSON"),
    (dict(json_schema={"type": "array", "uniqueItems": True}), "uniqueItems"),
    (dict(regex="(("), "unclosed group"),
])
def test_bad_specs_are_errors(kw, message):
    with pytest.raises(LmlabError, match=message):
        structured.Spec(**kw)


def test_constrained_generation_returns_a_valid_value_first_time(bundled_lm):
    r = structured.generate(bundled_lm, "Give a person.", json_schema=PERSON, max_new_tokens=48)
    assert r.ok and len(r.attempts) == 1 and r.attempts[0].error is None
    assert r.value == json.loads(r.text)
    jsonschema.validate(r.value, PERSON)


def test_failed_attempts_are_fed_back_and_reported(bundled_lm):
    """An output that cannot be valid (max_tokens too small for the schema, unconstrained) fails
    every attempt; each attempt records why, and the next prompt carries the error."""
    schema = {"type": "object", "properties": {"items": {"type": "array", "minItems": 30}}, "required": ["items"]}
    r = structured.generate(bundled_lm, "List thirty numbers.", json_schema=schema, constrained=False,
                            repair=1, max_new_tokens=6)
    assert not r.ok and r.value is None and len(r.attempts) == 2
    assert all(a.error for a in r.attempts)
    d = r.to_dict()
    assert d["attempts"][1]["text"] == r.text


def test_batch_rounds_only_rerun_what_failed(bundled_lm):
    specs = [structured.Spec(choice=["yes", "no"]), structured.Spec(regex=r"[0-9]{12}")]
    rs = structured.generate_batch(bundled_lm, ["Is water wet?", "Write a number."], specs,
                                   constrained=True, repair=1, max_new_tokens=4)
    assert rs[0].ok and len(rs[0].attempts) == 1 and rs[0].value in ("yes", "no")
    # 12 digits cannot fit in 4 tokens of this tokenizer's digits: cut off, retried once, reported
    assert not rs[1].ok and len(rs[1].attempts) == 2 and "cut off" in rs[1].attempts[0].error
