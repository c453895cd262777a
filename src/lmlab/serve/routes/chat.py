"""POST /v1/chat/completions: messages through the chat template, answered whole or streamed."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from lmlab.errors import LmlabError
from lmlab.serve.protocol import ApiError, ChatRequest, chat_messages, finish_reason, sampling_params, usage
from lmlab.serve.streaming import sse, stream

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat(request: Request):
    server = request.app.state.server
    body: ChatRequest = await server.read_body(request, ChatRequest)
    try:
        ids = server.tok.encode_chat(chat_messages(body.messages))
    except LmlabError as e:
        raise ApiError(400, str(e), param="messages") from None
    server.check_prompt(ids, "messages")
    params, k = chat_params(server, body, len(ids))
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": server.cfg.model_name}
    job = server.admit(ids, params, stream=body.stream)
    if body.stream:
        def render(_, d):
            if not d.text and d.finish_reason is None and not (body.logprobs and d.logprobs):
                return None
            choice = {"index": d.index, "delta": {"content": d.text} if d.text or d.finish_reason is None else {},
                      "logprobs": None, "finish_reason": finish_reason(d.finish_reason)}
            if body.logprobs and d.logprobs is not None and d.token_id is not None:
                choice["logprobs"] = {"content": [logprobs_entry(server, d.token_id, d.logprobs, k)]}
            return choice

        prelude = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None} for i in range(body.n)]
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse(stream(server, [job], head, render, n_prompt=len(ids), include_usage=include_usage,
                          prelude=prelude))
    out = (await server.collect(request, [job]))[0]
    choices = [choice(server, body, c, k) for c in out.outputs]
    return {"id": cid, "object": "chat.completion", "created": created, "model": server.cfg.model_name,
            "choices": choices, "usage": usage(len(ids), sum(len(c.token_ids) for c in out.outputs))}


def chat_params(server, body: ChatRequest, n_prompt: int):
    """The request's SamplingParams and top_logprobs count (chat's own rules on top of the shared ones)."""
    mt = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if mt == 0:
        raise ApiError(400, "max_tokens must be >= 1 for chat", param="max_tokens")
    max_tokens = server.max_tokens(mt, n_prompt, server.cfg.default_max_tokens)
    k = body.top_logprobs or 0
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    params = sampling_params(body, max_tokens=max_tokens, logprobs=k if body.logprobs else None, vocab=server.vocab,
                             max_tokens_limit=server.cfg.max_tokens_limit, max_n=server.cfg.max_concurrency)
    return params, k


def choice(server, body: ChatRequest, c, k: int) -> dict:
    """One finished choice: the assistant message (where parsed tool calls would go) and log-probs."""
    lp = None
    if body.logprobs:
        lp = {"content": [logprobs_entry(server, t, d, k) for t, d in zip(c.token_ids, c.logprobs or [])]}
    return {"index": c.index, "message": {"role": "assistant", "content": c.text}, "logprobs": lp,
            "finish_reason": finish_reason(c.finish_reason)}


def logprobs_entry(server, token_id: int, lp: dict[int, float], k: int) -> dict:
    s = server.token_str(token_id)
    top = sorted(lp.items(), key=lambda kv: -kv[1])[:k]
    return {"token": s, "logprob": lp[token_id], "bytes": list(s.encode()),
            "top_logprobs": [{"token": server.token_str(i), "logprob": v, "bytes": list(server.token_str(i).encode())}
                             for i, v in top]}
