"""Server-sent events: the one streaming loop of chat and completions.

`stream(server, jobs, firsts, head, render, ...)` merges the delta queues of one or more admitted
jobs, each after the first item the route already awaited (`Server.started`: a response starts
only once every job has started, so a refusal while waiting keeps its own status)
(completions take several prompts per request), times the first token and the gaps between
tokens, turns each delta into chunks with the route's `render` (a choice dict, a list of them
for several chunks, e.g. a tool call's name and its first arguments, or None to skip), answers an
engine error as an error event, ends with the usage chunk when asked and `[DONE]`, and releases
every job however the stream ends: a client that goes away closes the generator, which aborts
the jobs still running.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from lmlab.serve.protocol import usage
from lmlab.serve.server import Server, engine_error


async def stream(server: Server, jobs: list, firsts: list, head: dict,
                 render: Callable[[int, object], dict | list[dict] | None], *, n_prompt: int, include_usage: bool,
                 t0: float, prelude: list[dict] = ()) -> AsyncIterator[str]:
    """SSE lines for `jobs` [(request id, queue)] whose first items are `firsts` (t0: when the
    request came, for the time to first token); render(job index, Delta) -> choice dict."""
    m = server.metrics
    done = [False] * len(jobs)
    generated, first, last = 0, None, None
    merged: asyncio.Queue = asyncio.Queue()

    async def pump(i, q, item):
        while True:
            await merged.put((i, item))
            if item[0] in ("done", "error"):
                return
            item = await q.get()

    tasks = [asyncio.create_task(pump(i, q, f)) for i, ((_, q), f) in enumerate(zip(jobs, firsts))]
    try:
        for choice in prelude:
            yield data({**head, "choices": [choice]})
        while not all(done):
            i, (kind, item) = await merged.get()
            if kind in ("done", "error"):
                done[i] = True
                if kind == "error":
                    yield data(engine_error(item).body())
                else:
                    generated += sum(len(c.token_ids) for c in item.outputs)
                continue
            if item.token_id is not None:
                now = time.perf_counter()
                if first is None:
                    first = now
                    m.ttft.observe(now - t0)
                elif last is not None:
                    m.itl.observe(now - last)
                last = now
            choice = render(i, item)
            for c in ([] if choice is None else choice if isinstance(choice, list) else [choice]):
                yield data({**head, "choices": [c]})
        if include_usage:
            yield data({**head, "choices": [], "usage": usage(n_prompt, generated)})
        yield "data: [DONE]\n\n"
    finally:
        for t in tasks:
            t.cancel()
        if not all(done):
            m.disconnects += 1
        m.generation_tokens += generated
        m.e2e.observe(time.perf_counter() - t0)
        for (rid, _), fin in zip(jobs, done):
            server.release(rid, fin)


def data(obj) -> str:
    """One SSE event."""
    return f"data: {json.dumps(obj, ensure_ascii=False, allow_nan=False, default=_nan)}\n\n"


def _nan(x):
    return None


def sse(gen) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
