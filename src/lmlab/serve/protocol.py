"""The wire format: request bodies (pydantic), their checks, the error type, and the one
function that turns a request's sampling fields into the engine's SamplingParams.

Everything a request may say is declared and checked here; the routes (lmlab.serve.routes) only
run what a valid request asks for. Output constraints (response_format, guided_json/regex/choice/
grammar, structured_outputs) become SamplingParams fields in `sampling_params`, compiled there so
that a bad one is a 400 naming the field; tools and tool_choice are checked by lmlab.apps.tools
and reach the engine the same way, as a grammar.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError


class ApiError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with `status`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Base):
    include_usage: bool = False


class _Sampling(_Base):
    """Fields shared by chat and completions (OpenAI names, plus vLLM-style extensions)."""
    model: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    n: int = 1
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # extensions
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    min_tokens: int = 0
    stop_token_ids: Optional[list[int]] = None
    ignore_eos: bool = False
    best_of: Optional[int] = None
    watermark: Optional[Union[dict, str]] = None  # green-list watermark: {"gamma", "delta"} (lmlab.safety.watermark)
    # structured output: OpenAI's response_format, or vLLM's extra-body constraints (at most one)
    response_format: Optional[dict[str, Any]] = None
    guided_json: Optional[Union[dict[str, Any], str]] = None
    guided_regex: Optional[str] = None
    guided_choice: Optional[list[str]] = None
    guided_grammar: Optional[str] = None
    structured_outputs: Optional[dict[str, Any]] = None
    guided_whitespace_pattern: Optional[str] = None
    use_beam_search: bool = False  # vLLM's extra-body flag: refused (sampling_params), never ignored


class ChatMessage(_Base):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[dict[str, Any]]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[dict[str, Any]]] = None  # an assistant turn's calls
    tool_call_id: Optional[str] = None  # a tool turn's answer to that call


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    parallel_tool_calls: bool = True


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = 16
    echo: bool = False
    logprobs: Optional[int] = None
    suffix: Optional[str] = None


class EmbeddingRequest(_Base):
    model: Optional[str] = None
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None
    user: Optional[str] = None


class TokenizeRequest(_Base):
    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(_Base):
    model: Optional[str] = None
    tokens: list[int]


# ---- checks --------------------------------------------------------------------------------------

def from_validation(errors) -> ApiError:
    """A pydantic error list -> one 400 naming the first bad field."""
    e = errors[0] if errors else {}
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = e.get("msg", "invalid request")
    return ApiError(400, f"{param}: {msg}" if param else msg, param=param, code="invalid_type"
                    if "type" in e.get("type", "") or "parsing" in e.get("type", "") else e.get("type"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(data) -> None:
    """400 naming the first string (value or key) of a parsed body that is not valid Unicode: JSON's
    \\ud800 escapes decode to unpaired surrogates, which no tokenizer or UTF-8 encoder accepts."""
    stack = [((), data)]
    while stack:  # not recursive: a deeply nested body must not overflow Python's stack
        path, x = stack.pop()
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for k, v in items:
            where = path + (str(k).encode("utf-8", "backslashreplace").decode(),)  # printable in the error
            for s in (k, v):
                if isinstance(s, str) and (m := _SURROGATE.search(s)):
                    param = ".".join(where)
                    raise ApiError(400, f"{param}: text holds an unpaired UTF-16 surrogate "
                                        f"(\\u{ord(m.group()):04x} at character {m.start()})",
                                   param=param, code="invalid_text")
            if isinstance(v, (dict, list)):
                stack.append((where, v))


def chat_messages(messages: list[ChatMessage]) -> list[dict]:
    """Messages as dicts: text parts joined, `developer` as `system`, tool calls and tool-call ids
    kept (lmlab.apps.tools.render_messages turns them into text the template can render)."""
    out = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            bad = next((j for j, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                param = f"messages.{i}.content.{bad}.text"
                raise ApiError(400, f"{param}: a text part's text must be a string", param=param,
                               code="invalid_type")
            content = "".join(texts)
        d = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        if m.tool_calls:
            d["tool_calls"] = m.tool_calls
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


CONSTRAINT_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def constraint(body: _Sampling) -> tuple[str, dict] | None:
    """The request's one output constraint as (the field that gave it, SamplingParams keywords),
    or None; more than one is a 400 (never a silent choice between them)."""
    given = [f for f in CONSTRAINT_FIELDS if getattr(body, f) is not None]
    rf = body.response_format
    if rf is not None:
        kind = rf.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise ApiError(400, f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
                           param="response_format.type")
        if kind != "text":
            given.insert(0, "response_format")
    if len(given) > 1:
        raise ApiError(400, f"only one output constraint may be given; got {', '.join(given)}", param=given[1])
    if not given:
        return None
    field = given[0]
    if field != "response_format":
        kw = {field: getattr(body, field)}
    elif rf["type"] == "json_object":
        kw = {"guided_json_object": True}
    else:
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            raise ApiError(400, "response_format.json_schema must be an object {name, schema, strict}",
                           param="response_format.json_schema")
        name = js.get("name")
        if not isinstance(name, str) or not SCHEMA_NAME.match(name):
            raise ApiError(400, f"response_format.json_schema.name must be 1-64 letters, digits, '_' or '-', "
                                f"got {name!r}", param="response_format.json_schema.name")
        schema = js.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise ApiError(400, f"response_format.json_schema.schema must be a JSON schema object, got {schema!r}",
                           param="response_format.json_schema.schema")
        # without a schema OpenAI asks for some JSON object
        kw = {"guided_json": schema} if schema is not None else {"guided_json_object": True}
        field = "response_format.json_schema.schema" if schema is not None else "response_format"
    if body.guided_whitespace_pattern is not None:
        kw["guided_whitespace_pattern"] = body.guided_whitespace_pattern
    return field, kw


def sampling_params(body: _Sampling, *, max_tokens: int, logprobs: int | None, vocab: int, max_tokens_limit: int,
                    max_n: int, prompt_logprobs: int | None = None, tool_grammar: str | None = None,
                    default_temperature: float | None = None) -> SamplingParams:
    """The engine's SamplingParams for a chat or completion request, every value checked (400
    naming the field). The output constraint (response_format, guided_*, structured_outputs, or
    `tool_grammar` for tool calls) is compiled here too, so a bad one is a 400 before admission."""
    if max_tokens > max_tokens_limit:
        raise ApiError(400, f"max_tokens is {max_tokens}; the limit is {max_tokens_limit}", param="max_tokens")
    if body.n > max_n or (body.best_of or 0) > max_n:
        raise ApiError(400, f"n/best_of must be <= {max_n}", param="n")
    bias = {}
    for k, v in (body.logit_bias or {}).items():
        try:
            t = int(k)
        except ValueError:
            raise ApiError(400, f"logit_bias keys must be token ids, got {k!r}", param="logit_bias") from None
        if not 0 <= t < vocab or not -100 <= v <= 100:
            raise ApiError(400, f"logit_bias: token {t} must be in [0, {vocab}) and bias in [-100, 100]",
                           param="logit_bias")
        bias[t] = v
    for t in body.stop_token_ids or []:
        if not 0 <= t < vocab:
            raise ApiError(400, f"stop_token_ids: {t} is outside the vocabulary", param="stop_token_ids")
    if body.seed is not None and not -2**63 <= body.seed < 2**63:
        raise ApiError(400, "seed must fit in 64 bits", param="seed")
    kw = dict(max_tokens=max_tokens, n=body.n, best_of=body.best_of, seed=body.seed,
              presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
              logit_bias=bias, stop=body.stop or [], stop_token_ids=body.stop_token_ids or [],
              ignore_eos=body.ignore_eos, min_tokens=body.min_tokens, logprobs=logprobs,
              prompt_logprobs=prompt_logprobs, watermark=body.watermark)
    if default_temperature is not None:
        kw["temperature"] = default_temperature
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
        if getattr(body, name) is not None:
            kw[name] = getattr(body, name)
    try:
        params = SamplingParams(**kw)
    except LmlabError as e:
        msg = str(e)
        raise ApiError(400, msg, param=msg.split(" ", 1)[0]) from None
    given = constraint(body)
    if tool_grammar is not None:
        if given is not None:
            raise ApiError(400, f"{given[0]} cannot be combined with tool calls (tools with tool_choice other "
                                f"than 'none')", param=given[0])
        given = ("tools", {"guided_grammar": tool_grammar})
    if body.use_beam_search:
        if given is not None:
            from lmlab.engine.beam import refuse_constraint
            try:
                refuse_constraint([given[0]], where="beam search (use_beam_search)")
            except LmlabError as e:
                raise ApiError(400, str(e), param="use_beam_search", code="unsupported") from None
        raise ApiError(400, "use_beam_search is not supported by this server (its engine batches greedy and "
                            "sampled rows); use n / best_of, or lmlab.engine.beam.beam_search from Python",
                       param="use_beam_search", code="unsupported")
    if given is None:
        return params
    field, extra = given
    try:
        return SamplingParams(**kw, **extra)
    except LmlabError as e:
        raise ApiError(400, f"{field}: {e}", param=field, code="invalid_constraint") from None


# ---- response pieces shared by the routes --------------------------------------------------------

def finish_reason(r: str | None) -> str | None:
    return None if r is None else ("stop" if r == "abort" else r)


def cut(choice: dict, incomplete: bool) -> dict:
    """A choice (answered whole, or the last streamed chunk of one, the chunk with its
    finish_reason) whose constrained output was cut off before its grammar was complete gets
    `"incomplete": true` beside finish_reason ("length", or "stop" for a stop string): an added
    key, so OpenAI's own fields keep their meaning."""
    if incomplete:
        choice["incomplete"] = True
    return choice


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
