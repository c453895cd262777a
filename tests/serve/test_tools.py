"""Tool calling through the official openai client: calls held to the declared functions (a tiny
random model, so validity is the grammar's doing), streamed deltas that the client's own stream
accumulator puts back together, the OpenAI docs' get_weather example on the bundled model, and
bad tools answered with 400s while the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import start_server

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

LOOKUP = {"type": "function", "function": {
    "name": "lookup", "description": "Find a city's weather.",
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"], "additionalProperties": False}}}
CONVERT = {"type": "function", "function": {
    "name": "convert", "parameters": {"type": "object", "properties": {
        "amount": {"type": "integer", "minimum": 0, "maximum": 1000}, "to": {"enum": ["EUR", "USD"]}},
        "required": ["amount", "to"], "additionalProperties": False}}}
TOOLS = [LOOKUP, CONVERT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MSG = [{"role": "user", "content": "What is the weather in Paris for three days?"}]


@pytest.fixture(scope="module")
def tiny_server(tiny_folder, tmp_path_factory):
    s = start_server(tiny_folder, tmp_path_factory, "--max-concurrency", "8")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tiny(tiny_server):
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def check_calls(message, names=None):
    assert message.tool_calls and message.content is None
    for tc in message.tool_calls:
        assert tc.id.startswith("call_") and tc.type == "function"
        assert names is None or tc.function.name in names
        jsonschema.validate(json.loads(tc.function.arguments), SCHEMAS[tc.function.name])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "convert"}}])
def test_forced_calls_are_valid_whole_and_streamed(tiny, choice):
    kw = dict(model="smollm2", messages=MSG, tools=TOOLS, tool_choice=choice, temperature=1.0, seed=4,
              max_tokens=120, parallel_tool_calls=False)
    r = tiny.chat.completions.create(**kw)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
    check_calls(c.message, None if choice == "required" else {"convert"})
    # the client's own accumulator rebuilds the same message from the deltas
    with tiny.chat.completions.stream(**kw) as stream:
        final = stream.get_final_completion()
    s = final.choices[0]
    assert s.finish_reason == "tool_calls"
    assert [(t.function.name, t.function.arguments) for t in s.message.tool_calls] == [
        (t.function.name, t.function.arguments) for t in c.message.tool_calls]


def test_stream_deltas_have_openais_shape(tiny_server):
    body = {"model": "smollm2", "messages": MSG, "tools": TOOLS, "tool_choice": "required", "temperature": 1.0,
            "seed": 5, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", tiny_server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    starts = [tc for tc in calls if "id" in tc]
    assert starts and all(tc["type"] == "function" and tc["function"]["arguments"] == "" and tc["function"]["name"]
                          for tc in starts)
    assert [tc["index"] for tc in starts] == list(range(len(starts)))
    for i, start in enumerate(starts):
        fragments = [tc["function"]["arguments"] for tc in calls if tc["index"] == i and "id" not in tc]
        assert fragments
        jsonschema.validate(json.loads("".join(fragments)), SCHEMAS[start["function"]["name"]])
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(d.get("content") for d in deltas)


def test_history_with_tool_results_and_tool_choice_none(tiny):
    history = MSG + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "lookup", "arguments": '{"city": "Paris", "days": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    r = tiny.chat.completions.create(model="smollm2", messages=history, tools=TOOLS, tool_choice="none",
                                     max_tokens=8, temperature=0)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")
    r = tiny.chat.completions.create(model="smollm2", messages=history, tools=TOOLS, tool_choice="required",
                                     max_tokens=120, temperature=0)
    check_calls(r.choices[0].message)


BAD = [
    ({"tools": [{"type": "function", "function": {"parameters": {"type": "object"}}}]}, "tools",
     "tools[0].function.name is missing"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice",
     "'get_time', which is not among the tools"),
    ({"tools": "lookup"}, "tools", "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "strnig"}}}}}]}, "tools", "not a valid JSON schema"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "sometimes"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format", "cannot be combined"),
    ({"messages": MSG + [{"role": "tool", "content": "x"}], "tools": TOOLS}, "messages", "tool_call_id"),
]


@pytest.mark.parametrize("extra, param, words", BAD)
def test_bad_tools_are_400s_and_the_server_keeps_serving(tiny_server, extra, param, words):
    body = {"model": "smollm2", "messages": MSG, "max_tokens": 5, **extra}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"] and err["type"] == "invalid_request_error"
    ok = httpx.post(tiny_server.url + "/v1/chat/completions", timeout=60, json={
        "model": "smollm2", "messages": MSG, "tools": TOOLS, "tool_choice": "required", "max_tokens": 120})
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "tool_calls"


# ---- the OpenAI docs' example on the bundled model -----------------------------------------------

@pytest.fixture(scope="module")
def bundled_client(bundled_folder, tmp_path_factory):
    s = start_server(bundled_folder, tmp_path_factory, "--default-max-tokens", "40")
    yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    s.stop()


def get_weather(latitude, longitude):
    return 14.2


def test_openai_docs_get_weather_example_runs_unchanged(bundled_client):
    client = bundled_client
    # from here on: platform.openai.com/docs/guides/function-calling, only the model's name differs
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get current temperature for provided coordinates in celsius.",
            "parameters": {
                "type": "object",
                "properties": {
                    "latitude": {"type": "number"},
                    "longitude": {"type": "number"}
                },
                "required": ["latitude", "longitude"],
                "additionalProperties": False
            },
            "strict": True
        }
    }]
    messages = [{"role": "user", "content": "What's the weather like in Paris today?"}]
    completion = client.chat.completions.create(model="smollm2", messages=messages, tools=tools)
    tool_call = completion.choices[0].message.tool_calls[0]
    args = json.loads(tool_call.function.arguments)
    result = get_weather(args["latitude"], args["longitude"])
    messages.append(completion.choices[0].message)  # append model's function call message
    messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": str(result)})
    completion_2 = client.chat.completions.create(model="smollm2", messages=messages, tools=tools)
    # end of the example
    assert completion.choices[0].finish_reason == "tool_calls"
    assert isinstance(args["latitude"], (int, float)) and isinstance(args["longitude"], (int, float))
    answer = completion_2.choices[0].message
    assert answer.content and not answer.tool_calls  # the result came back: the model answers in words
    # streamed, the same call arrives in deltas
    stream = client.chat.completions.create(model="smollm2", messages=messages[:1], tools=tools, stream=True)
    name, arguments, reason = None, "", None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                name = tc.function.name or name
                arguments += tc.function.arguments or ""
            reason = c.finish_reason or reason
    assert (name, arguments, reason) == ("get_weather", tool_call.function.arguments, "tool_calls")
