"""POST /v1/chat/completions: messages through the chat template, answered whole or streamed.

With `tools`, the functions go into the prompt Hermes-style and the output is held to the call
grammar of `tool_choice` (lmlab.apps.tools); the answer's calls come back as message.tool_calls
(streamed as OpenAI streams them: a delta naming each call, then its argument fragments).
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from lmlab.apps import tools
from lmlab.errors import LmlabError
from lmlab.serve.protocol import ApiError, ChatRequest, chat_messages, cut, finish_reason, sampling_params, usage
from lmlab.serve.streaming import sse, stream

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat(request: Request):
    server = request.app.state.server
    body: ChatRequest = await server.read_body(request, ChatRequest)
    functions, tool_choice = tool_spec(body)
    calling = tool_choice != "none"
    try:
        messages = tools.render_messages(chat_messages(body.messages), functions if calling else [],
                                         body.parallel_tool_calls, example=server.cfg.tool_example)
    except LmlabError as e:
        raise ApiError(400, str(e), param="messages") from None
    try:
        ids = server.tok.encode_chat(messages)
    except LmlabError as e:
        raise ApiError(400, str(e), param="messages") from None
    server.check_prompt(ids, "messages")
    params, k = chat_params(server, body, len(ids), tools.grammar(functions, tool_choice, body.parallel_tool_calls))
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": server.cfg.model_name}
    t0 = time.perf_counter()
    job = server.admit(ids, params, stream=body.stream)
    if body.stream:
        firsts = await server.started(request, [job])
        readers = {i: tools.CallStream(functions) for i in range(body.n)} if calling else {}

        def render(_, d):
            if not d.text and d.finish_reason is None and not (body.logprobs and d.logprobs):
                return None
            lp = None
            if body.logprobs and d.logprobs is not None and d.token_id is not None:
                lp = {"content": [logprobs_entry(server, d.token_id, d.logprobs, k)]}
            reason = finish_reason(d.finish_reason)
            if not calling:
                return cut({"index": d.index, "delta": {"content": d.text} if d.text or d.finish_reason is None else {},
                            "logprobs": lp, "finish_reason": reason}, d.incomplete)
            reader = readers[d.index]
            deltas = tool_deltas(reader.feed(d.text) + (reader.flush() if d.finish_reason is not None else []))
            if reason == "stop" and reader.calls:
                reason = "tool_calls"
            if reason is not None:
                deltas.append({})
            elif not deltas and lp is not None:
                deltas.append({"content": ""})
            chunks = [{"index": d.index, "delta": delta, "logprobs": None, "finish_reason": None} for delta in deltas]
            if chunks:
                chunks[0]["logprobs"] = lp
                chunks[-1]["finish_reason"] = reason
                cut(chunks[-1], d.incomplete)
            return chunks

        prelude = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None} for i in range(body.n)]
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse(stream(server, [job], firsts, head, render, n_prompt=len(ids), include_usage=include_usage,
                          t0=t0, prelude=prelude))
    out = (await server.collect(request, [job]))[0]
    choices = [choice(server, body, c, k, functions if calling else None) for c in out.outputs]
    return {"id": cid, "object": "chat.completion", "created": created, "model": server.cfg.model_name,
            "choices": choices, "usage": usage(len(ids), sum(len(c.token_ids) for c in out.outputs))}


def tool_spec(body: ChatRequest) -> tuple[list[dict], str]:
    """The request's functions and its tool_choice ("none", "auto", "required", "function:NAME")."""
    try:
        functions = tools.check_tools(body.tools) if body.tools else []
    except LmlabError as e:
        raise ApiError(400, str(e), param="tools") from None
    try:
        return functions, tools.check_tool_choice(body.tool_choice, functions)
    except LmlabError as e:
        raise ApiError(400, str(e), param="tool_choice") from None


def tool_deltas(events: list[tuple]) -> list[dict]:
    """CallStream events -> chat deltas: text as content, a call's start with its id, type, name
    and arguments "", then its argument fragments (consecutive pieces of one kind merged)."""
    out: list[dict] = []
    for e in events:
        if e[0] == "content":
            if out and set(out[-1]) == {"content"}:
                out[-1]["content"] += e[1]
            else:
                out.append({"content": e[1]})
        elif e[0] == "call":
            out.append({"tool_calls": [{"index": e[1], "id": e[2], "type": "function",
                                        "function": {"name": e[3], "arguments": ""}}]})
        else:
            last = out[-1]["tool_calls"][0] if out and "tool_calls" in out[-1] else None
            if last is not None and last["index"] == e[1] and "id" not in last:
                last["function"]["arguments"] += e[2]
            else:
                out.append({"tool_calls": [{"index": e[1], "function": {"arguments": e[2]}}]})
    return out


def chat_params(server, body: ChatRequest, n_prompt: int, tool_grammar: str | None = None):
    """The request's SamplingParams and top_logprobs count (chat's own rules on top of the shared ones)."""
    mt = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if mt == 0:
        raise ApiError(400, "max_tokens must be >= 1 for chat", param="max_tokens")
    max_tokens = server.max_tokens(mt, n_prompt, server.cfg.default_max_tokens)
    k = body.top_logprobs or 0
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    params = sampling_params(body, max_tokens=max_tokens, logprobs=k if body.logprobs else None, vocab=server.vocab,
                             max_tokens_limit=server.cfg.max_tokens_limit, max_n=server.cfg.max_concurrency,
                             tool_grammar=tool_grammar, default_temperature=server.cfg.default_temperature)
    return params, k


def choice(server, body: ChatRequest, c, k: int, functions: list[dict] | None = None) -> dict:
    """One finished choice: the assistant message (with its tool calls when `functions` may be
    called) and log-probs."""
    lp = None
    if body.logprobs:
        lp = {"content": [logprobs_entry(server, t, d, k) for t, d in zip(c.token_ids, c.logprobs or [])]}
    message, reason = {"role": "assistant", "content": c.text}, finish_reason(c.finish_reason)
    if functions is not None:
        content, calls = tools.parse(c.text, functions)
        if calls:
            message = {"role": "assistant", "content": content, "tool_calls": [t.to_openai() for t in calls]}
            reason = "tool_calls" if reason == "stop" else reason
    return cut({"index": c.index, "message": message, "logprobs": lp, "finish_reason": reason},
               getattr(c, "incomplete", False))


def logprobs_entry(server, token_id: int, lp: dict[int, float], k: int) -> dict:
    s = server.token_str(token_id)
    top = sorted(lp.items(), key=lambda kv: -kv[1])[:k]
    return {"token": s, "logprob": lp[token_id], "bytes": list(s.encode()),
            "top_logprobs": [{"token": server.token_str(i), "logprob": v, "bytes": list(server.token_str(i).encode())}
                             for i, v in top]}
