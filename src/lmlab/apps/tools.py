"""Tool calling for models whose chat template knows nothing of tools: OpenAI `tools` rendered in
the Hermes style, the grammar that keeps a call valid, and the parser that turns the output back
into OpenAI `tool_calls`.

The prompt lists each function's JSON schema inside <tools></tools> in the system turn and asks
for calls as
    <tool_call>
    {"name": "get_weather", "arguments": {"location": "Paris"}}
    </tool_call>
Assistant turns that made calls are rendered the same way, and tool results go back in a user
turn as <tool_response>{"name": ..., "content": ...}</tool_response>, the shape Hermes and Qwen
models were trained on. With `example=True` a worked exchange (a request, the call, its response,
the answer) comes before the conversation: small models never trained on tools follow a shown
exchange where instructions alone leave them answering in words.

`grammar` gives the Lark text (llguidance dialect) for a tool_choice: "required" or a named
function allows only calls, "auto" allows free text or calls. Each call's JSON is one embedded
schema, an anyOf over the functions ({"name": const, "arguments": that function's parameters}),
written with fixed separators so the output has no runaway whitespace and the streaming parser
(`CallStream`) can read it as it comes.

Everything here is a pure function of its inputs; errors are LmlabError naming the bad field.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from lmlab.errors import LmlabError

OPEN, CLOSE = "<tool_call>", "</tool_call>"
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for function names
# What the grammar's JSON looks like: json.dumps' own separators, nothing more.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass
class ToolCall:
    name: str
    arguments: str  # the JSON text of the arguments object, as the model wrote it
    id: str = ""

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


# ---- checking the request ------------------------------------------------------------------------

def check_tools(tools) -> list[dict]:
    """OpenAI `tools` -> the list of function dicts {name, description, parameters}, every field
    checked (LmlabError naming e.g. tools[1].function.name)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(tools, list):
        raise LmlabError(f"tools must be a list of {{'type': 'function', 'function': {{...}}}}, got {tools!r}")
    functions, seen = [], set()
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, dict):
            raise LmlabError(f"{where} must be an object, got {t!r}")
        if t.get("type", "function") != "function":
            raise LmlabError(f"{where}.type must be 'function', got {t.get('type')!r}")
        f = t.get("function")
        if not isinstance(f, dict):
            raise LmlabError(f"{where}.function is missing (an object with 'name' and 'parameters')")
        name = f.get("name")
        if not name:
            raise LmlabError(f"{where}.function.name is missing: every tool needs a name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise LmlabError(f"{where}.function.name {name!r} must be 1-64 letters, digits, '_' or '-'")
        if name in seen:
            raise LmlabError(f"{where}.function.name {name!r} is declared twice")
        seen.add(name)
        if f.get("description") is not None and not isinstance(f["description"], str):
            raise LmlabError(f"{where}.function.description must be a string")
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise LmlabError(f"{where}.function.parameters must be a JSON schema object, got {params!r}")
        if params.get("type", "object") != "object":
            raise LmlabError(f"{where}.function.parameters must describe an object (type 'object'), "
                             f"got type {params.get('type')!r}")
        try:
            Draft202012Validator.check_schema(params)
        except SchemaError as e:
            path = "".join(f"[{p!r}]" for p in e.path)
            raise LmlabError(f"{where}.function.parameters{path} is not a valid JSON schema: {e.message}") from None
        functions.append({"name": name, "description": f.get("description") or "", "parameters": params})
    return functions


def check_tool_choice(choice, functions: list[dict]) -> str:
    """tool_choice -> "none" | "auto" | "required" | "function:<name>"; defaults as OpenAI's
    ("auto" with tools, "none" without)."""
    if choice is None:
        return "auto" if functions else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise LmlabError(f"tool_choice must be 'none', 'auto', 'required' or "
                             f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")
        if choice != "none" and not functions:
            raise LmlabError(f"tool_choice {choice!r} needs tools")
        return choice
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(choice.get("function"), dict):
        raise LmlabError(f"tool_choice must be 'none', 'auto', 'required' or "
                         f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")
    name = choice["function"].get("name")
    names = [f["name"] for f in functions]
    if name not in names:
        raise LmlabError(f"tool_choice names function {name!r}, which is not among the tools {names}")
    return f"function:{name}"


# ---- the prompt ----------------------------------------------------------------------------------

def system_prompt(functions: list[dict], parallel: bool = True) -> str:
    sigs = "\n".join(json.dumps({"type": "function", "function": f}, ensure_ascii=False) for f in functions)
    how = ("You may call one or more functions" if parallel else "You may call one function")
    return (f"# Tools\n\n{how} to help with the user's request. The functions are described by these JSON "
            f"signatures inside <tools></tools> XML tags:\n<tools>\n{sigs}\n</tools>\n\n"
            "To call a function, answer with a JSON object holding its name and arguments inside "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n'
            "When a function's result is given to you in <tool_response></tool_response> tags, use it to answer.")


EXAMPLE = [  # a function the request does not declare, so the grammar never lets the model call it
    {"role": "user", "content": "What time is it in Tokyo?"},
    {"role": "assistant", "content": f'{OPEN}\n{{"name": "example_get_time", "arguments": {{"timezone": "Asia/Tokyo"}}}}'
                                     f"\n{CLOSE}"},
    {"role": "user", "content": '<tool_response>\n{"name": "example_get_time", "content": "14:02"}\n</tool_response>'},
    {"role": "assistant", "content": "It is 14:02 in Tokyo."},
]


def render_messages(messages: list[dict], functions: list[dict], parallel: bool = True,
                    example: bool = False) -> list[dict]:
    """OpenAI chat messages (tool_calls on assistant turns, role "tool" turns) -> plain
    {role, content} messages a tool-less chat template renders; the tools go in the system turn,
    then the worked EXAMPLE when `example`."""
    out: list[dict] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for the tool responses
    for i, m in enumerate(messages):
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            blocks = []
            for j, tc in enumerate(m["tool_calls"]):
                f = tc.get("function") if isinstance(tc, dict) else None
                if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                    raise LmlabError(f"messages[{i}].tool_calls[{j}] must have function.name and function.arguments")
                try:
                    args = json.loads(f.get("arguments") or "{}")
                except (TypeError, ValueError):
                    raise LmlabError(f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: "
                                     f"{f.get('arguments')!r}") from None
                names[tc.get("id", "")] = f["name"]
                blocks.append(f"{OPEN}\n{json.dumps({'name': f['name'], 'arguments': args}, ensure_ascii=False)}"
                              f"\n{CLOSE}")
            content = "\n".join(([content] if content else []) + blocks)
            out.append({"role": "assistant", "content": content})
        elif role == "tool":
            tid = m.get("tool_call_id")
            if not tid:
                raise LmlabError(f"messages[{i}] has role 'tool' but no tool_call_id")
            block = (f"<tool_response>\n{json.dumps({'name': names.get(tid, ''), 'content': content}, ensure_ascii=False)}"
                     f"\n</tool_response>")
            if out and out[-1].get("tool_turn"):  # results of parallel calls share one turn
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "tool_turn": True})
        else:
            out.append({"role": role, "content": content})
    for m in out:
        m.pop("tool_turn", None)
    if functions:
        tools_text = system_prompt(functions, parallel)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{tools_text}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": tools_text})
        if example:
            out[1:1] = [dict(m) for m in EXAMPLE]
    return out


# ---- the constraint ------------------------------------------------------------------------------

def call_schema(functions: list[dict]) -> dict:
    """One call's JSON: {"name": const, "arguments": parameters} for any of `functions`."""
    options = [{"type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
                "required": ["name", "arguments"], "additionalProperties": False} for f in functions]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "x-guidance": JSON_STYLE}


def grammar(functions: list[dict], choice: str, parallel: bool = True) -> str | None:
    """The Lark grammar (llguidance dialect) for tool_choice `choice`, or None for "none"."""
    if choice == "none":
        return None
    if choice.startswith("function:"):
        functions = [f for f in functions if f["name"] == choice.split(":", 1)[1]]
    calls = 'call ("\\n" call)*' if parallel else "call"
    lines = [f"calls: {calls}",
             f'call: "{OPEN}\\n" call_json "\\n{CLOSE}"',
             f"call_json: %json {json.dumps(call_schema(functions), ensure_ascii=False)}"]
    if choice == "auto":
        # Free text may not begin with "<", so an answer that starts a call is held to the schema.
        return "\n".join(["start: TEXT | calls", "TEXT: /[^<](.|\\n)*/"] + lines)
    return "\n".join(["start: calls"] + lines)


# ---- reading the output --------------------------------------------------------------------------

_CALL_RE = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.S)


def parse(text: str, functions: list[dict] | None = None) -> tuple[str | None, list[ToolCall]]:
    """Model output -> (content outside the calls or None, the calls). A block whose JSON does not
    parse, or names an undeclared function, stays in the content as text."""
    names = None if functions is None else {f["name"] for f in functions}
    calls, kept, pos = [], [], 0
    for m in _CALL_RE.finditer(text):
        call = _read_call(m.group(1), names)
        if call is None:
            continue
        kept.append(text[pos:m.start()])
        pos = m.end()
        calls.append(call)
    kept.append(text[pos:])
    content = "".join(kept).strip()
    return (content or None) if calls else text, calls


def _read_call(body: str, names: set[str] | None) -> ToolCall | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    if names is not None and obj["name"] not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(args, dict):
        return None
    raw = _raw_arguments(body)
    arguments = raw if raw is not None and json.loads(raw) == args else json.dumps(args, ensure_ascii=False)
    return ToolCall(obj["name"], arguments, call_id())


def _raw_arguments(body: str) -> str | None:
    """The arguments object's text as written (so stream and whole answer carry the same string)."""
    m = re.search(r'"arguments"\s*:\s*', body)
    if m is None:
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(body, m.end())
    except ValueError:
        return None
    return body[m.end():end]


class CallStream:
    """Reads output text piece by piece and says what to stream: `feed(text)` and `flush()` return
    events ("content", text), ("call", index, id, name) and ("arguments", index, fragment), the
    way OpenAI streams tool calls (a call's first delta names it, then argument fragments follow;
    joined, the fragments are the arguments string). Text that may be the start of <tool_call>
    is held back until it is known not to be. A call written with "arguments" before "name"
    (possible only without the grammar) is sent whole when its block closes."""

    _HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')

    def __init__(self, functions: list[dict] | None = None):
        self.names = None if functions is None else {f["name"] for f in functions}
        self.buf = ""
        self.mode = "text"  # text | head (in <tool_call>, name not read yet) | args | tail (args read)
        self.calls: list[ToolCall] = []
        self.depth, self.in_str, self.escape = 0, False, False

    def feed(self, text: str) -> list[tuple]:
        self.buf += text
        events: list[tuple] = []
        while True:
            before = (self.mode, self.buf)
            getattr(self, "_" + self.mode)(events)
            if (self.mode, self.buf) == before:
                return events

    def flush(self) -> list[tuple]:
        """The end of the output: text held back is content, and so is a block that never
        named its function; a call cut off in its arguments stays as streamed."""
        events: list[tuple] = []
        if self.mode == "text" and (self.buf.strip() if self.calls else self.buf):
            events.append(("content", self.buf))
        elif self.mode == "head":
            events.append(("content", OPEN + self.buf))
        self.buf, self.mode = "", "text"
        return events

    # each mode's step consumes what it can of self.buf

    def _text(self, events):
        k = self.buf.find(OPEN)
        if k >= 0:
            if self.buf[:k].strip() or (self.buf[:k] and not self.calls):
                events.append(("content", self.buf[:k]))
            self.buf, self.mode = self.buf[k + len(OPEN):], "head"
            return
        # keep the longest tail that could still grow into <tool_call>
        keep = next((n for n in range(min(len(OPEN) - 1, len(self.buf)), 0, -1)
                     if OPEN.startswith(self.buf[-n:])), 0)
        if self.calls and not self.buf[:len(self.buf) - keep].strip():
            return  # whitespace between calls is not content
        if len(self.buf) > keep:
            events.append(("content", self.buf[:len(self.buf) - keep]))
            self.buf = self.buf[len(self.buf) - keep:]

    def _head(self, events):
        m = self._HEAD.match(self.buf)
        if m is not None:
            name = json.loads(f'"{m.group(1)}"')
            if self.names is None or name in self.names:
                self.calls.append(ToolCall(name, "", call_id()))
                events.append(("call", len(self.calls) - 1, self.calls[-1].id, name))
                self.buf, self.mode = self.buf[m.end():], "args"
                self.depth, self.in_str, self.escape = 0, False, False
                return
        k = self.buf.find(CLOSE)
        if k < 0:
            return  # wait for more, or for the end of the block
        call = _read_call(self.buf[:k], self.names)
        if call is None:  # not a call after all: the block is ordinary text
            events.append(("content", OPEN + self.buf[:k + len(CLOSE)]))
        else:
            self.calls.append(call)
            events.append(("call", len(self.calls) - 1, call.id, call.name))
            events.append(("arguments", len(self.calls) - 1, call.arguments))
        self.buf, self.mode = self.buf[k + len(CLOSE):], "text"

    def _args(self, events):
        # scan the arguments object to its closing brace, streaming it as it comes
        if not self.calls[-1].arguments:
            self.buf = self.buf.lstrip()
        i, n = 0, len(self.buf)
        while i < n:
            c = self.buf[i]
            i += 1
            if self.in_str:
                if self.escape:
                    self.escape = False
                elif c == "\\":
                    self.escape = True
                elif c == '"':
                    self.in_str = False
            elif c == '"':
                self.in_str = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.mode = "tail"
                    break
        if i:
            self.calls[-1].arguments += self.buf[:i]
            events.append(("arguments", len(self.calls) - 1, self.buf[:i]))
            self.buf = self.buf[i:]

    def _tail(self, events):
        k = self.buf.find(CLOSE)
        if k >= 0:
            self.buf, self.mode = self.buf[k + len(CLOSE):], "text"
        elif len(self.buf) > len(CLOSE):
            self.buf = self.buf[-len(CLOSE):]  # the outer "}" and newline: not part of anything sent
