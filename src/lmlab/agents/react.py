"""A ReAct-style loop (Yao et al. 2023): the model calls a tool, reads its result and goes on until
it answers or runs out of steps.

Calls are written the Hermes way (what apps/tools.py renders for the server's tool calling):

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "3 * 7"}}
    </tool_call>

and results go back as <tool_response>{"name": ..., "content": ...}</tool_response> in a user turn.
A reply with no call is the answer. Whatever goes wrong with a call (JSON that does not parse, an
unknown tool, arguments that break the tool's schema, the tool raising, the tool running past its
timeout) is fed back to the model as an error response and the loop goes on; `max_steps` bounds the
model's turns. Every step is written as it happens to trace.jsonl and transcript.txt.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lmlab.agents.tools import Tool
from lmlab.errors import LmlabError

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


@dataclass
class Step:
    step: int  # the model turn it belongs to, from 1
    kind: str  # "model" | "tool" | "error" | "answer" | "budget"
    text: str = ""  # the model's reply, or the tool's result / the error fed back
    tool: str | None = None
    arguments: dict | None = None
    seconds: float = 0.0


@dataclass
class AgentResult:
    task: str
    answer: str | None  # None when the step budget ran out first
    steps: list[Step] = field(default_factory=list)
    model_turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0

    @property
    def finished(self) -> bool:
        return self.answer is not None

    def to_dict(self) -> dict:
        return {"task": self.task, "answer": self.answer, "finished": self.finished, "model_turns": self.model_turns,
                "tool_calls": self.tool_calls, "tool_errors": self.tool_errors,
                "steps": [asdict(s) for s in self.steps]}


def system_prompt(tools: list[Tool]) -> str:
    sigs = "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in tools)
    return ("You solve the user's task step by step. You may call these tools, described by JSON signatures "
            f"inside <tools></tools> tags:\n<tools>\n{sigs}\n</tools>\n\n"
            "To call a tool, reply with a JSON object with its name and arguments inside <tool_call></tool_call> "
            'tags:\n<tool_call>\n{"name": <tool-name>, "arguments": <args-json-object>}\n</tool_call>\n'
            "The result comes back in <tool_response></tool_response> tags. When you know the answer, "
            "reply with the answer and no tool call.")


def parse_calls(text: str) -> list[tuple[str | None, dict | None, str | None]]:
    """(name, arguments, error) for each <tool_call> block; error says what is wrong with a block."""
    out = []
    for m in _CALL.finditer(text):
        body = m.group(1).strip()
        try:
            call = json.loads(body)
        except json.JSONDecodeError as e:
            out.append((None, None, f"the tool call is not valid JSON ({e.msg} at character {e.pos}): {body[:200]}"))
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            out.append((None, None, 'a tool call must be {"name": ..., "arguments": {...}}'))
            continue
        args = call.get("arguments", {})
        if isinstance(args, str):  # some models write the arguments as a JSON string, as OpenAI does
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            out.append((call["name"], None, f"arguments must be a JSON object, got {json.dumps(args)[:200]}"))
            continue
        out.append((call["name"], args, None))
    return out


def check_arguments(tool: Tool, args: dict) -> str | None:
    """The first schema violation, said so the model can fix it; None when the arguments are valid."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(tool.parameters).iter_errors(args), key=lambda e: list(e.path))
    if not errors:
        return None
    e = errors[0]
    where = "".join(f"[{p!r}]" for p in e.path)
    return f"invalid arguments for {tool.name}{where}: {e.message}"


def call_with_timeout(tool: Tool, args: dict) -> tuple[str | None, str | None]:
    """(result, error). A tool still running after tool.timeout seconds is abandoned (its daemon
    thread is left to finish alone) and reported as timed out."""
    box: dict = {}

    def target():
        try:
            box["result"] = str(tool.fn(**args))
        except Exception as e:  # a tool's failure is data for the model, whatever its type
            box["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, LmlabError) else str(e)

    t = threading.Thread(target=target, daemon=True, name=f"tool-{tool.name}")
    t.start()
    t.join(tool.timeout)
    if t.is_alive():
        return None, f"{tool.name} timed out after {tool.timeout:g} s"
    return box.get("result"), box.get("error")


class Agent:
    def __init__(self, model: Callable[[list[dict]], str], tools: list[Tool], max_steps: int = 8,
                 trace_dir: str | Path | None = None, max_result_chars: int = 4000):
        """model: chat messages -> the assistant's reply (see `lm_model`)."""
        if max_steps < 1:
            raise LmlabError(f"max_steps must be >= 1 (got {max_steps})")
        self.model, self.tools = model, {t.name: t for t in tools}
        self.max_steps, self.trace_dir, self.max_result_chars = max_steps, trace_dir, max_result_chars

    def run(self, task: str) -> AgentResult:
        result = AgentResult(task, None)
        messages = [{"role": "system", "content": system_prompt(list(self.tools.values()))},
                    {"role": "user", "content": task}]
        trace = _Trace(self.trace_dir, task)
        try:
            for n in range(1, self.max_steps + 1):
                t0 = time.perf_counter()
                reply = self.model(messages)
                result.model_turns += 1
                trace.add(result, Step(n, "model", reply, seconds=time.perf_counter() - t0))
                calls = parse_calls(reply)
                if not calls:
                    result.answer = reply.strip()
                    trace.add(result, Step(n, "answer", result.answer))
                    return result
                messages.append({"role": "assistant", "content": reply})
                responses = []
                for name, args, error in calls:
                    content = None
                    t0 = time.perf_counter()
                    if error is None and name not in self.tools:
                        error = f"unknown tool {name!r}; the tools are {', '.join(self.tools)}"
                    if error is None:
                        error = check_arguments(self.tools[name], args)
                    if error is None:
                        result.tool_calls += 1
                        content, error = call_with_timeout(self.tools[name], args)
                    if error is not None:
                        result.tool_errors += 1
                        content = f"error: {error}"
                    content = content[:self.max_result_chars]
                    trace.add(result, Step(n, "error" if error else "tool", content, name, args,
                                           time.perf_counter() - t0))
                    responses.append("<tool_response>\n" + json.dumps({"name": name, "content": content},
                                                                       ensure_ascii=False) + "\n</tool_response>")
                messages.append({"role": "user", "content": "\n".join(responses)})
            trace.add(result, Step(self.max_steps, "budget", f"step budget of {self.max_steps} model turns reached"))
            return result
        finally:
            trace.close()


class _Trace:
    """trace.jsonl (one JSON object a step) and transcript.txt (the same, for people), written as
    the run goes so that a crash leaves what happened before it."""

    def __init__(self, folder, task: str):
        self.jsonl = self.text = None
        if folder is not None:
            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(folder / "trace.jsonl", "a", encoding="utf-8")
            self.text = open(folder / "transcript.txt", "a", encoding="utf-8")
            self.text.write(f"=== task: {task}\n")

    def add(self, result: AgentResult, step: Step) -> None:
        result.steps.append(step)
        if self.jsonl is None:
            return
        self.jsonl.write(json.dumps({"task": result.task, **asdict(step)}, ensure_ascii=False) + "\n")
        label = {"model": "model", "tool": f"tool {step.tool}", "error": f"error ({step.tool or 'call'})",
                 "answer": "ANSWER", "budget": "STOPPED"}[step.kind]
        args = f" {json.dumps(step.arguments, ensure_ascii=False)}" if step.arguments else ""
        self.text.write(f"--- step {step.step} · {label}{args} · {step.seconds:.2f}s\n{step.text}\n")
        self.jsonl.flush()
        self.text.flush()

    def close(self) -> None:
        for f in (self.jsonl, self.text):
            if f is not None:
                f.close()


def lm_model(lm, max_new_tokens: int = 384, temperature: float = 0.0) -> Callable[[list[dict]], str]:
    """An Agent model from an lmlab LM: greedy by default; a reply stops after its first tool call
    (the model must read the result before it goes on)."""

    def model(messages: list[dict]) -> str:
        out = lm.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=["</tool_call>"])
        text = out.text
        if "<tool_call>" in text and "</tool_call>" not in text and out.finish_reason == "stop":
            text += "</tool_call>"  # the stop string is not part of the output
        return text

    return model


def endpoint_model(base_url: str, model: str, tools: list[Tool], api_key: str | None = None,
                   max_tokens: int = 384, transport=None) -> Callable[[list[dict]], str]:
    """An Agent model from any OpenAI-compatible server (lmlab serve included): the tools go as
    OpenAI `tools`, and the reply's `tool_calls` come back as <tool_call> blocks for the loop. The
    loop's own system prompt is left out: the server renders the tools itself."""
    import httpx

    client = httpx.Client(base_url=base_url.rstrip("/"), timeout=120, transport=transport,
                          headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    specs = [t.spec() for t in tools]

    def call(messages: list[dict]) -> str:
        body = {"model": model, "messages": [m for m in messages if m["role"] != "system"], "tools": specs,
                "max_tokens": max_tokens, "temperature": 0}
        r = client.post("/chat/completions", json=body)
        if r.status_code != 200:
            raise LmlabError(f"{base_url}: HTTP {r.status_code}: {r.text[:300]}")
        msg = r.json()["choices"][0]["message"]
        text = msg.get("content") or ""
        for tc in msg.get("tool_calls") or []:
            f = tc["function"]
            text += f'\n<tool_call>\n{{"name": {json.dumps(f["name"])}, "arguments": {f.get("arguments") or "{}"}}}\n</tool_call>'
        return text

    return call


def run_agent(lm_or_model, task: str, tools: list[Tool], max_steps: int = 8, trace_dir=None) -> AgentResult:
    model = lm_or_model if callable(lm_or_model) and not hasattr(lm_or_model, "generate") else lm_model(lm_or_model)
    return Agent(model, tools, max_steps, trace_dir).run(task)
