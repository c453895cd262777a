"""The agent loop with a scripted model: answers, step budget, tool errors and invalid arguments
fed back, a hanging tool timed out, traces; the tools themselves; one short run of the real model."""

import json
import sqlite3
import time

import pytest

from lmlab.agents import Agent, Tool, calculate, make_tools, parse_calls
from lmlab.agents.react import lm_model
from lmlab.errors import LmlabError


def call(name, **args):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": args})}\n</tool_call>'


class Scripted:
    """Replies from a list, in order; remembers every conversation it was shown."""

    def __init__(self, *replies):
        self.replies, self.seen = list(replies), []

    def __call__(self, messages):
        self.seen.append([dict(m) for m in messages])
        return self.replies.pop(0) if self.replies else call("calculator", expression="1+1")

    def last_response(self):
        return self.seen[-1][-1]["content"]


def test_the_model_reads_the_tool_result_then_answers(tmp_path):
    model = Scripted(call("calculator", expression="17 * 23"), "17 * 23 = 391")
    result = Agent(model, make_tools("calculator"), trace_dir=tmp_path).run("What is 17 * 23?")
    assert result.answer == "17 * 23 = 391" and result.finished
    assert '"content": "391"' in model.last_response()
    assert (result.model_turns, result.tool_calls, result.tool_errors) == (2, 1, 0)
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert [t["kind"] for t in trace] == ["model", "tool", "model", "answer"]
    assert trace[1]["tool"] == "calculator" and trace[1]["arguments"] == {"expression": "17 * 23"}
    transcript = (tmp_path / "transcript.txt").read_text()
    assert "task: What is 17 * 23?" in transcript and "tool calculator" in transcript and "ANSWER" in transcript


def test_the_step_budget_stops_a_model_that_never_answers():
    model = Scripted()  # calls the calculator forever
    result = Agent(model, make_tools("calculator"), max_steps=3).run("loop")
    assert result.answer is None and not result.finished
    assert result.model_turns == 3 and len(model.seen) == 3
    assert result.steps[-1].kind == "budget" and "3" in result.steps[-1].text


def test_tool_errors_go_back_to_the_model_and_the_loop_goes_on():
    model = Scripted(call("calculator", expression="1 / 0"), call("calculator", expression="__import__('os')"),
                     "I could not compute it.")
    result = Agent(model, make_tools("calculator")).run("divide")
    assert result.finished and result.tool_errors == 2
    assert "division by zero" in model.seen[1][-1]["content"]
    assert "not allowed" in model.seen[2][-1]["content"]


@pytest.mark.parametrize("reply,expect", [
    (call("calculator", expr="2+2"), "invalid arguments for calculator"),  # wrong argument name
    (call("calculator", expression=4), "invalid arguments for calculator['expression']"),  # wrong type
    ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"</tool_call>', "not valid JSON"),
    (call("weather", city="Paris"), "unknown tool 'weather'"),
])
def test_invalid_calls_are_explained_to_the_model(reply, expect):
    model = Scripted(reply, "done")
    result = Agent(model, make_tools("calculator")).run("task")
    assert expect in model.last_response()
    assert result.finished and result.tool_errors == 1 and result.tool_calls == 0


def test_a_hanging_tool_is_timed_out():
    hang = Tool("hang", "never returns", {"type": "object", "properties": {}}, lambda: time.sleep(30), timeout=0.3)
    model = Scripted(call("hang"), "gave up")
    t0 = time.perf_counter()
    result = Agent(model, [hang]).run("task")
    assert time.perf_counter() - t0 < 5
    assert "hang timed out after 0.3 s" in model.last_response() and result.tool_errors == 1


def test_calculator_is_arithmetic_only():
    assert calculate("(3 + 4) * 2 / 7") == 2 and calculate("2^10") == 1024 and calculate("1,250 * 2") == 2500
    assert calculate("sqrt(16) + max(2, 3)") == 7
    for bad in ["__import__('os').system('x')", "().__class__", "open('f')", "9 ** 9 ** 9", "x + 1"]:
        with pytest.raises(LmlabError):
            calculate(bad)


def test_parse_calls_reads_several_blocks_and_string_arguments():
    text = call("a", x=1) + "\n" + '<tool_call>{"name": "b", "arguments": "{\\"y\\": 2}"}</tool_call>'
    assert parse_calls(text) == [("a", {"x": 1}, None), ("b", {"y": 2}, None)]
    assert parse_calls("no call here") == []


def test_python_tool_runs_in_the_sandbox():
    (py,) = make_tools("python")
    assert py.fn(code="print(sum(range(10)))") == "45"
    with pytest.raises(LmlabError, match="failed|error"):
        py.fn(code="raise ValueError('boom')")


def test_sql_tool_is_read_only(tmp_path):
    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE items (name TEXT, price REAL)")
    con.executemany("INSERT INTO items VALUES (?, ?)", [("pen", 1.5), ("book", 12.0)])
    con.commit()
    con.close()
    (tool,) = make_tools("sql", db=db)
    assert "CREATE TABLE items" in tool.description
    assert json.loads(tool.fn(query="SELECT name FROM items WHERE price > 2")) == {"columns": ["name"], "rows": [["book"]]}
    model = Scripted(call("sql", query="DELETE FROM items"), "could not")
    result = Agent(model, [tool]).run("delete everything")
    assert "readonly" in model.last_response().replace(" ", "").lower() and result.tool_errors == 1
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM items").fetchone() == (2,)


def test_search_tool_over_an_index(tmp_path):
    from lmlab.rag import Index, IndexConfig

    (tmp_path / "d.jsonl").write_text('{"id": "etna", "text": "Mount Etna is a volcano on Sicily."}\n'
                                      '{"id": "kiwi", "text": "The kiwi is a flightless bird."}\n')
    Index.build([tmp_path / "d.jsonl"], tmp_path / "idx", IndexConfig(dense="none"))
    (tool,) = make_tools("search", index=tmp_path / "idx")
    assert tool.fn(query="volcano Sicily").startswith("[etna] Mount Etna")


def test_real_model_runs_the_loop(bundled_lm, tmp_path):
    result = Agent(lm_model(bundled_lm, max_new_tokens=48), make_tools("calculator"), max_steps=2,
                   trace_dir=tmp_path).run("Use the calculator to compute 12 * 34.")
    assert 1 <= result.model_turns <= 2
    assert result.finished or result.steps[-1].kind == "budget"
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert len(lines) == len(result.steps)


def test_an_openai_compatible_server_drives_the_loop():
    httpx = pytest.importorskip("httpx")
    from lmlab.agents.react import endpoint_model

    sent = []

    def handler(request):
        body = json.loads(request.content)
        sent.append(body)
        if len(sent) == 1:
            msg = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                   "function": {"name": "calculator", "arguments": '{"expression": "6 * 7"}'}}]}
        else:
            msg = {"role": "assistant", "content": "6 * 7 = 42"}
        return httpx.Response(200, json={"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]})

    tools = make_tools("calculator")
    model = endpoint_model("http://server/v1", "smollm2", tools, transport=httpx.MockTransport(handler))
    result = Agent(model, tools).run("What is 6 * 7?")
    assert result.answer == "6 * 7 = 42" and result.tool_calls == 1
    assert sent[0]["tools"][0]["function"]["name"] == "calculator"
    assert all(m["role"] != "system" for m in sent[0]["messages"])
    assert '"content": "42"' in sent[1]["messages"][-1]["content"]
