"""Tool calling's pure parts: checking tools, Hermes rendering, the call grammar (checked with
llguidance's own matcher), parsing, and the streaming parser against the whole-text parser."""

from __future__ import annotations

import json
import random

import pytest

from lmlab.apps import tools
from lmlab.errors import LmlabError

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get current temperature for a given location.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["location"], "additionalProperties": False}, "strict": True}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
FNS = tools.check_tools([WEATHER, ADD])


def call(name, args) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


@pytest.mark.parametrize("bad, words", [
    ("get_weather", "must be a list"),
    ([{"type": "function", "function": {"description": "no name"}}], "tools[0].function.name is missing"),
    ([{"type": "function"}], "tools[0].function is missing"),
    ([{"type": "retrieval", "function": {"name": "x"}}], "tools[0].type must be 'function'"),
    ([WEATHER, {"type": "function", "function": {"name": "has space"}}], "tools[1].function.name 'has space'"),
    ([WEATHER, WEATHER], "declared twice"),
    ([{"type": "function", "function": {"name": "f", "parameters": "a string"}}], "must be a JSON schema object"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], "describe an object"),
    ([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "strnig"}}}}}], "tools[0].function.parameters['properties']"),
])
def test_bad_tools_are_named(bad, words):
    with pytest.raises(LmlabError, match=words.replace("[", r"\[").replace("(", r"\(")):
        tools.check_tools(bad)


def test_tool_choice_forms_and_errors():
    assert tools.check_tool_choice(None, FNS) == "auto" and tools.check_tool_choice(None, []) == "none"
    assert tools.check_tool_choice("required", FNS) == "required"
    assert tools.check_tool_choice({"type": "function", "function": {"name": "add"}}, FNS) == "function:add"
    with pytest.raises(LmlabError, match="'get_time', which is not among the tools"):
        tools.check_tool_choice({"type": "function", "function": {"name": "get_time"}}, FNS)
    with pytest.raises(LmlabError, match="needs tools"):
        tools.check_tool_choice("required", [])
    with pytest.raises(LmlabError, match="must be 'none', 'auto', 'required'"):
        tools.check_tool_choice("sometimes", FNS)


def test_history_renders_calls_and_responses_that_parse_back(bundled_folder):
    from lmlab.tokenizer import Tokenizer

    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and 2+3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "5"},
    ]
    out = tools.render_messages(history, FNS)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]  # both results in one turn
    assert out[0]["content"].startswith("Be brief.") and "<tools>" in out[0]["content"]
    sigs = out[0]["content"].split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(s)["function"]["name"] for s in sigs] == ["get_weather", "add"]
    content, calls = tools.parse(out[2]["content"], FNS)
    assert content is None and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"location": "Paris"}), ("add", {"a": 2, "b": 3})]
    responses = [json.loads(b.split("</tool_response>")[0]) for b in out[3]["content"].split("<tool_response>\n")[1:]]
    assert responses == [{"name": "get_weather", "content": "18 C"}, {"name": "add", "content": "5"}]
    text = Tokenizer.from_folder(bundled_folder).apply_chat_template(out)
    assert text.count("<|im_start|>") == 5 and text.endswith("<|im_start|>assistant\n")
    with_example = tools.render_messages(history, FNS, example=True)
    assert with_example[1:5] == tools.EXAMPLE and with_example[5:] == out[1:]


def test_bad_history_is_named():
    with pytest.raises(LmlabError, match=r"messages\[1\].tool_calls\[0\].function.arguments is not valid JSON"):
        tools.render_messages([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
            {"id": "c", "function": {"name": "add", "arguments": "{a: 1"}}]}], FNS)
    with pytest.raises(LmlabError, match="no tool_call_id"):
        tools.render_messages([{"role": "tool", "content": "5"}], FNS)


def test_required_grammar_admits_only_declared_calls(admits):
    g = tools.grammar(FNS, "required")
    assert admits(g, call("get_weather", {"location": "Paris"}))
    assert admits(g, call("get_weather", {"location": "Paris", "unit": "celsius"}))
    assert admits(g, call("add", {"a": 1, "b": -2}) + "\n" + call("get_weather", {"location": "Rome"}))
    assert not admits(g, call("get_time", {}))  # an undeclared function
    assert not admits(g, call("add", {"a": 1}))  # a required argument missing
    assert not admits(g, call("add", {"a": 1, "b": "2"}))  # a wrong type
    assert not admits(g, call("get_weather", {"location": "Paris", "unit": "kelvin"}))  # outside the enum
    assert not admits(g, call("get_weather", {"location": "Paris", "when": "now"}))  # additionalProperties false
    assert not admits(g, "It is sunny.")  # a call is required
    single = tools.grammar(FNS, "required", parallel=False)
    assert admits(single, call("add", {"a": 1, "b": 2}))
    assert not admits(single, call("add", {"a": 1, "b": 2}) + "\n" + call("add", {"a": 3, "b": 4}))


def test_named_and_auto_grammars(admits):
    named = tools.grammar(FNS, "function:add")
    assert admits(named, call("add", {"a": 1, "b": 2}))
    assert not admits(named, call("get_weather", {"location": "Paris"}))
    auto = tools.grammar(FNS, "auto")
    assert admits(auto, "It is sunny in Paris.\nEnjoy!")
    assert admits(auto, call("get_weather", {"location": "Paris"}))
    assert not admits(auto, call("get_time", {}))  # a started call is held to the schema
    assert tools.grammar(FNS, "none") is None


def test_parse_keeps_what_is_not_a_call_as_content():
    text = "Let me check.\n" + call("add", {"a": 1, "b": 2}) + "\n<tool_call>\n{broken\n</tool_call>"
    content, calls = tools.parse(text, FNS)
    assert [c.name for c in calls] == ["add"] and calls[0].arguments == '{"a": 1, "b": 2}'
    assert content == "Let me check.\n\n<tool_call>\n{broken\n</tool_call>"
    assert calls[0].id.startswith("call_") and len(calls[0].id) > 10
    assert tools.parse(call("get_time", {}), FNS) == (call("get_time", {}), [])  # undeclared: plain text
    assert tools.parse("No calls here.", FNS) == ("No calls here.", [])


OUTPUTS = [
    "Sure.\n" + call("get_weather", {"location": 'Paris {x} "q" \\ [1]'}) + "\n" + call("add", {"a": 1, "b": 2}),
    call("add", {"a": 10, "b": 20}),
    '<tool_call>\n{"arguments": {"a": 1, "b": 2}, "name": "add"}\n</tool_call>',  # arguments first
    "a < b and <tool>" + call("get_weather", {"location": "Oslo"}) + " done",
    "<tool_call>\n{not json}\n</tool_call> and text",
    "plain text with <tool_call",  # cut off in the opening tag
]


@pytest.mark.parametrize("text", OUTPUTS)
def test_streamed_events_join_to_the_parsed_answer(text):
    content, calls = tools.parse(text, FNS)
    rng = random.Random(0)
    for _ in range(50):
        reader, events, i = tools.CallStream(FNS), [], 0
        while i < len(text):
            k = rng.randint(1, 6)
            events += reader.feed(text[i:i + k])
            i += k
        events += reader.flush()
        streamed = "".join(e[1] for e in events if e[0] == "content")
        assert (streamed.strip() or None) == (content.strip() if content else None)
        starts = [e for e in events if e[0] == "call"]
        assert [e[3] for e in starts] == [c.name for c in calls]
        for idx, c in enumerate(calls):
            first = events.index(starts[idx])
            fragments = [e[2] for e in events if e[0] == "arguments" and e[1] == idx]
            assert "".join(fragments) == c.arguments
            assert all(events.index(e) > first for e in events if e[0] == "arguments" and e[1] == idx)
