"""POST /v1/completions: one or more prompts continued, with echo and legacy log-probs."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from lmlab.serve.protocol import ApiError, CompletionRequest, cut, finish_reason, sampling_params, usage
from lmlab.serve.streaming import sse, stream

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request):
    server = request.app.state.server
    body: CompletionRequest = await server.read_body(request, CompletionRequest)
    prompts = server.prompt_list(body.prompt, server.cfg.max_queue, "prompt")
    mt = server.max_tokens(body.max_tokens, max(len(p) for p in prompts), 16)
    k = body.logprobs
    if k is not None and not 0 <= k <= 20:
        raise ApiError(400, f"logprobs must be in [0, 20], got {k}", param="logprobs")
    if body.stream and (body.echo or mt == 0):
        raise ApiError(400, "echo and max_tokens=0 are not supported with stream", param="stream")
    params = sampling_params(body, max_tokens=max(mt, 1), logprobs=k, vocab=server.vocab,
                             max_tokens_limit=server.cfg.max_tokens_limit, max_n=server.cfg.max_concurrency,
                             prompt_logprobs=k if (body.echo and k is not None) else None,
                             default_temperature=server.cfg.default_temperature)
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    t0 = time.perf_counter()
    jobs = [server.admit(p, params, len(prompts) - i, body.stream) for i, p in enumerate(prompts)]
    n_prompt = sum(map(len, prompts))
    if body.stream:
        firsts = await server.started(request, jobs)
        head = {"id": cid, "object": "text_completion", "created": created, "model": server.cfg.model_name}
        offsets: dict[int, int] = {}

        def render(i, d):
            if not d.text and d.finish_reason is None and not (k is not None and d.logprobs):
                return None
            idx = i * body.n + d.index
            lp = None
            if k is not None and d.logprobs is not None and d.token_id is not None:
                lp = legacy_logprobs(server, [d.token_id], [d.logprobs], offsets.get(idx, 0))
            offsets[idx] = offsets.get(idx, 0) + len(d.text)
            return cut({"index": idx, "text": d.text, "logprobs": lp, "finish_reason": finish_reason(d.finish_reason)},
                       d.incomplete)

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse(stream(server, jobs, firsts, head, render, n_prompt=n_prompt, include_usage=include_usage,
                          t0=t0))
    outs = await server.collect(request, jobs)
    choices, n_out = [], 0
    for pi, (ids, out) in enumerate(zip(prompts, outs)):
        for c in out.outputs:
            gen_ids, gen_lps, text = c.token_ids, c.logprobs or [], c.text
            if mt == 0:
                gen_ids, gen_lps, text, reason = [], [], "", "length"
            else:
                reason = finish_reason(c.finish_reason)
            n_out += len(gen_ids)
            prompt_text = server.tok.decode(ids, skip_special_tokens=False) if body.echo else ""
            lp = None
            if k is not None:
                all_ids, all_lps = list(gen_ids), list(gen_lps)
                if body.echo:
                    all_ids, all_lps = ids + all_ids, list(out.prompt_logprobs or [None] * len(ids)) + all_lps
                lp = legacy_logprobs(server, all_ids, all_lps, 0)
            choices.append(cut({"index": pi * body.n + c.index, "text": prompt_text + text, "logprobs": lp,
                                "finish_reason": reason}, bool(mt) and getattr(c, "incomplete", False)))
    return {"id": cid, "object": "text_completion", "created": created, "model": server.cfg.model_name,
            "choices": choices, "usage": usage(n_prompt, n_out)}


def legacy_logprobs(server, ids: list[int], lps: list, offset0: int) -> dict:
    """The completions API's log-probs: tokens, their log-probs, top alternatives, text offsets."""
    tokens, token_lps, tops, offsets = [], [], [], []
    pos = offset0
    for t, d in zip(ids, lps):
        s = server.token_str(t)
        tokens.append(s)
        offsets.append(pos)
        pos += len(s)
        if d is None:
            token_lps.append(None)
            tops.append(None)
        else:
            token_lps.append(d[t])
            top: dict[str, float] = {}
            for i, v in sorted(d.items(), key=lambda kv: -kv[1]):
                top.setdefault(server.token_str(i), v)
            tops.append(top)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}
