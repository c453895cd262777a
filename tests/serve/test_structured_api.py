"""Structured output through the HTTP API: OpenAI's response_format and vLLM's guided_* /
structured_outputs, streamed and whole, on chat and completions; bad constraints are a 400 that
names the problem and the server keeps serving.

A tiny random model serves here: left alone it writes noise, so every valid output is the
constraint's doing (jsonschema and re are the references)."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from .conftest import start_server

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

MSG = [{"role": "user", "content": "Describe a person as JSON."}]
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 120}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]},
                                               "minItems": 1, "maxItems": 3}},
     "required": ["tags"], "additionalProperties": False},
    {"type": "object", "properties": {
        "address": {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                                                     "city": {"enum": ["Paris", "Rome"]}},
                    "required": ["zip", "city"], "additionalProperties": False},
        "phone": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"}]}},
     "required": ["address", "phone"], "additionalProperties": False},
]


@pytest.fixture(scope="module")
def tiny_server(tiny_folder, tmp_path_factory):
    s = start_server(tiny_folder, tmp_path_factory, "--max-concurrency", "8")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tiny(tiny_server):
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def streamed(chunks) -> tuple[str, str]:
    text, reason = "", None
    for chunk in chunks:
        for c in chunk.choices:
            text += c.delta.content or ""
            reason = c.finish_reason or reason
    return text, reason


@pytest.mark.parametrize("i", range(len(SCHEMAS)))
def test_json_schema_response_format_validates_whole_and_streamed(tiny, i):
    schema = SCHEMAS[i]
    rf = {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}}
    kw = dict(model="smollm2", messages=MSG, max_tokens=200, temperature=1.0, seed=i, response_format=rf)
    r = tiny.chat.completions.create(**kw)
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    text, reason = streamed(tiny.chat.completions.create(**kw, stream=True))
    assert (text, reason) == (r.choices[0].message.content, "stop")  # same seed, same output


def test_json_object_and_the_openai_parse_helper(tiny):
    # any JSON object: noise inside its strings may run to max_tokens; what finishes parses, what
    # is cut off is flagged incomplete
    for seed in range(4):
        c = tiny.chat.completions.create(model="smollm2", messages=MSG, max_tokens=150, temperature=1.0, seed=seed,
                                         response_format={"type": "json_object"}).choices[0]
        assert c.message.content.startswith("{")
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.message.content), dict) and not getattr(c, "incomplete", False)
        else:  # cut off: flagged, and the text is no JSON document yet
            assert c.finish_reason == "length" and c.incomplete is True
            with pytest.raises(ValueError):
                json.loads(c.message.content)
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=10)
        age: int = pydantic.Field(ge=0, le=99)

    parsed = tiny.chat.completions.parse(model="smollm2", messages=MSG, max_tokens=100, temperature=0,
                                         response_format=Person)
    assert isinstance(parsed.choices[0].message.parsed, Person)


def test_vllm_guided_fields_on_chat_and_completions(tiny):
    def chat(extra, **kw):
        return tiny.chat.completions.create(model="smollm2", messages=MSG, max_tokens=40, temperature=1.0, seed=1,
                                            extra_body=extra, **kw).choices[0].message.content

    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", chat({"guided_regex": r"[0-9]{3}-[0-9]{4}"}))
    assert chat({"guided_choice": ["yes", "no", "maybe"]}) in ("yes", "no", "maybe")
    assert chat({"structured_outputs": {"choice": ["red", "green"]}}) in ("red", "green")
    sums = 'start: NUM (" + " NUM)* " = " NUM\nNUM: /[0-9]{1,3}/'
    assert re.fullmatch(r"[0-9]{1,3}( \+ [0-9]{1,3})* = [0-9]{1,3}", chat({"guided_grammar": sums}))
    text, reason = streamed(tiny.chat.completions.create(
        model="smollm2", messages=MSG, max_tokens=40, temperature=1.0, seed=1, stream=True,
        extra_body={"guided_regex": r"[0-9]{3}-[0-9]{4}"}))
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", text) and reason == "stop"
    r = tiny.completions.create(model="smollm2", prompt="The answer is", max_tokens=10, temperature=1.0, seed=2,
                                n=3, extra_body={"guided_choice": ["yes", "no"]})
    assert [c.text in ("yes", "no") for c in r.choices] == [True] * 3
    schema = SCHEMAS[0]
    pieces = [c.choices[0].text for c in tiny.completions.create(
        model="smollm2", prompt="Person:", max_tokens=200, temperature=1.0, seed=3, stream=True,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}})]
    jsonschema.validate(json.loads("".join(pieces)), schema)


BAD = [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema", "objekt"),
    ({"guided_json": {"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}},
     "guided_json", "no-such-format"),
    ({"guided_regex": "([0-9]+"}, "guided_regex", "guided_regex"),
    ({"guided_grammar": "start: foo bar("}, "guided_grammar", "guided_grammar"),
    ({"guided_choice": []}, "guided_choice", "guided_choice"),
    ({"structured_outputs": {"jsonn": {}}}, "structured_outputs", "jsonn"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "only one output constraint"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "xml"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name",
     "name"),
]


@pytest.mark.parametrize("extra, param, words", BAD)
def test_bad_constraints_are_400s_naming_the_problem(tiny_server, extra, param, words):
    body = {"model": "smollm2", "messages": MSG, "max_tokens": 5, **extra}
    for route, b in (("/v1/chat/completions", body),
                     ("/v1/completions", {**{k: v for k, v in body.items() if k != "messages"}, "prompt": "x"})):
        r = httpx.post(tiny_server.url + route, json=b, timeout=30)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and words in err["message"] and err["type"] == "invalid_request_error"
    ok = httpx.post(tiny_server.url + "/v1/chat/completions", timeout=30, json={
        "model": "smollm2", "messages": MSG, "max_tokens": 5, "guided_choice": ["fine"]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "fine"


def test_a_cut_off_constrained_stream_flags_its_last_chunk_incomplete(tiny):
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMAS[0]}}
    for cut, max_tokens in ((True, 3), (False, 200)):
        chunks = [c for chunk in tiny.chat.completions.create(model="smollm2", messages=MSG, max_tokens=max_tokens,
                                                             temperature=0, response_format=rf, stream=True)
                  for c in chunk.choices]
        *before, last = chunks
        assert last.finish_reason == ("length" if cut else "stop")
        assert getattr(last, "incomplete", False) is cut and not any(hasattr(c, "incomplete") for c in before)
        whole = tiny.chat.completions.create(model="smollm2", messages=MSG, max_tokens=max_tokens, temperature=0,
                                             response_format=rf).choices[0]
        assert getattr(whole, "incomplete", False) is cut  # the same flag as the answer given whole
    pieces = list(tiny.completions.create(model="smollm2", prompt="Person:", max_tokens=3, temperature=0, stream=True,
                                          extra_body={"guided_json": SCHEMAS[0]}))
    assert pieces[-1].choices[0].finish_reason == "length" and pieces[-1].choices[0].incomplete is True
    # a free stream cut by length is no constrained output: no flag
    free = list(tiny.completions.create(model="smollm2", prompt="Person:", max_tokens=3, temperature=0, stream=True))
    assert free[-1].choices[0].finish_reason == "length" and not hasattr(free[-1].choices[0], "incomplete")


@pytest.mark.parametrize("extra, words", [
    ({"response_format": {"type": "json_object"}}, "does not support output constraints (got response_format)"),
    ({"guided_regex": "[0-9]+"}, "does not support output constraints (got guided_regex)"),
    ({}, "use_beam_search is not supported"),
])
def test_beam_search_is_a_400_and_with_a_constraint_says_so(tiny_server, extra, words):
    body = {"model": "smollm2", "messages": MSG, "max_tokens": 5, "use_beam_search": True, **extra}
    for route, b in (("/v1/chat/completions", body),
                     ("/v1/completions", {**{k: v for k, v in body.items() if k != "messages"}, "prompt": "x"})):
        r = httpx.post(tiny_server.url + route, json=b, timeout=30)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "use_beam_search" and words in err["message"], err
        assert err["type"] == "invalid_request_error"
    ok = httpx.post(tiny_server.url + "/v1/chat/completions", timeout=30, json={**body, "use_beam_search": False})
    assert ok.status_code == 200, ok.text
