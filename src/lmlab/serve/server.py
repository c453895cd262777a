"""`Server`: what every route shares, one object per app (`request.app.state.server`).

It holds the runner, the config, the served model's limits and the metrics, and does the steps
common to the routes: check the key, read and validate a body, check a prompt, admit a request
(503 with Retry-After beyond `max_queue`, or when it waited `max_queue_wait` s without starting),
wait for its first result (a stream starts only then, so a refusal keeps its status) or all of
them (aborting on disconnect), and release the slot.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time

from fastapi import Request
from starlette.requests import ClientDisconnect
from pydantic import BaseModel, ValidationError

from lmlab.errors import LmlabError
from lmlab.serve.config import ServeConfig
from lmlab.serve.metrics import Metrics
from lmlab.serve.protocol import ApiError, check_text, from_validation
from lmlab.serve.runner import Overloaded


class Server:
    def __init__(self, runner, config: ServeConfig):
        self.runner, self.cfg = runner, config
        self.tok = runner.tokenizer
        self.ctx = runner.config.max_seq_len
        self.vocab = runner.config.vocab_size
        self.max_prompt = min(config.max_prompt_tokens or self.ctx - 1, self.ctx - 1)
        self.metrics = Metrics()
        self.pending = 0  # requests admitted and not yet released

    # ---- reading a request ---------------------------------------------------------------------

    def check_key(self, request: Request) -> None:
        key = self.cfg.api_key
        if not key:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not given or not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})

    async def read_body(self, request: Request, schema: type[BaseModel]):
        """The key checked, the body read within `max_body_bytes`, parsed and validated."""
        self.check_key(request)
        limit = self.cfg.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"request body is {int(length)} bytes; the limit is {limit}", code="request_too_large")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.cfg.read_timeout):  # a body shorter than its Content-Length
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(413, f"request body exceeds the limit of {limit} bytes",
                                       code="request_too_large")
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(408, f"request body incomplete after {self.cfg.read_timeout:g} s ({size} bytes read)",
                           code="request_timeout", headers={"Connection": "close"}) from None
        except ClientDisconnect:
            raise ApiError(499, "client disconnected", code="client_closed") from None
        try:
            data = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ApiError(400, f"body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object", code="invalid_json")
        check_text(data)
        try:
            body = schema.model_validate(data)
        except ValidationError as e:
            raise from_validation(e.errors()) from None
        model = getattr(body, "model", None)
        if model is not None and model != self.cfg.model_name:
            raise ApiError(404, f"model {model!r} does not exist; this server serves {self.cfg.model_name!r}",
                           param="model", code="model_not_found")
        return body

    def check_prompt(self, ids: list[int], param: str = "prompt") -> list[int]:
        if not ids:
            raise ApiError(400, "empty prompt: nothing to continue", param=param)
        if len(ids) > self.max_prompt:
            raise ApiError(400, f"prompt has {len(ids)} tokens; the limit is {self.max_prompt} "
                                f"(the model's context is {self.ctx})", param=param, code="context_length_exceeded")
        self.check_ids(ids, param)
        return ids

    def check_ids(self, ids: list[int], param: str) -> None:
        bad = [t for t in ids if not 0 <= t < self.vocab]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is outside the vocabulary [0, {self.vocab})", param=param)

    def prompt_list(self, prompt, limit: int, param: str) -> list[list[int]]:
        """Token ids of each prompt (a string, strings, ids or lists of ids), each checked."""
        if isinstance(prompt, str):
            prompts = [self.tok.encode(prompt)]
        elif not prompt:
            raise ApiError(400, f"empty {param}", param=param)
        elif isinstance(prompt[0], str):
            prompts = [self.tok.encode(p) for p in prompt]
        elif isinstance(prompt[0], int):
            prompts = [list(prompt)]
        else:
            prompts = [list(p) for p in prompt]
        if len(prompts) > limit:
            raise ApiError(400, f"at most {limit} {param}s per request", param=param)
        return [self.check_prompt(p, param) for p in prompts]

    def max_tokens(self, max_tokens: int | None, n_prompt: int, default: int) -> int:
        """The request's max_tokens, or `default` cut to what the context leaves."""
        if max_tokens is None:
            return max(1, min(default, self.ctx - n_prompt))
        if max_tokens < 0:
            raise ApiError(400, f"max_tokens must be >= 0, got {max_tokens}", param="max_tokens")
        return max_tokens

    def token_str(self, t: int) -> str:
        return self.tok.decode([t], skip_special_tokens=False)

    # ---- running it ----------------------------------------------------------------------------

    def admit(self, ids: list[int], params, count: int = 1, stream: bool = False):
        """Queue one prompt -> (request id, asyncio.Queue); 503 when `count` more would pass
        `max_queue`. Every admitted request is released exactly once (`release`)."""
        if self.pending + count > self.cfg.max_queue:
            self.metrics.rejected += 1
            raise overloaded(f"server busy: {self.pending} requests in flight (limit {self.cfg.max_queue}); retry",
                             "queue_full")
        self.pending += 1
        self.metrics.prompt_tokens += len(ids)
        return self.runner.add(ids, params, stream)

    def release(self, rid: str, finished: bool) -> None:
        self.pending -= 1
        if not finished:
            self.runner.abort(rid)

    async def collect(self, request: Request, jobs: list[tuple[str, asyncio.Queue]]):
        """Wait for every job's RequestOutput; abort them all if the client goes away."""
        t0 = time.perf_counter()
        outs: list = [None] * len(jobs)
        try:
            await self._wait(request, jobs, outs, first=False)
        finally:
            for (rid, _), out in zip(jobs, outs):
                self.release(rid, out is not None)
        self.metrics.e2e.observe(time.perf_counter() - t0)
        for out in outs:
            self.metrics.generation_tokens += sum(len(c.token_ids) for c in out.outputs)
        return outs


    async def started(self, request: Request, jobs: list[tuple[str, asyncio.Queue]]) -> list[tuple[str, object]]:
        """Each job's first item (its first delta, or its end), for a stream to begin with: a
        request refused while it waited (503) or by the engine (4xx) is then answered with its
        own status, not as an error event inside a 200 stream. On an error or a disconnect every
        job is released (and aborted)."""
        firsts: list = [None] * len(jobs)
        try:
            await self._wait(request, jobs, firsts, first=True)
        except BaseException:
            for rid, _ in jobs:
                self.release(rid, False)
            raise
        return firsts

    async def _wait(self, request: Request, jobs, got: list, first: bool) -> None:
        """Fill got[i] with job i's first (kind, item) when `first`, else with its RequestOutput;
        an error item raises its ApiError, and so does the client going away."""
        checked = time.perf_counter()
        for i, (rid, q) in enumerate(jobs):
            while got[i] is None:
                try:
                    kind, item = await asyncio.wait_for(q.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    kind = item = None
                if time.perf_counter() - checked > 0.25:
                    checked = time.perf_counter()
                    if await request.is_disconnected():
                        self.metrics.disconnects += 1
                        raise ApiError(499, "client disconnected", code="client_closed") from None
                if kind == "error":
                    if isinstance(item, Overloaded):
                        self.metrics.rejected += 1
                    raise engine_error(item)
                if kind is not None and first:
                    got[i] = (kind, item)
                elif kind == "done":
                    got[i] = item


def overloaded(message: str, code: str) -> ApiError:
    """503 with Retry-After, in OpenAI's shape: the server is full now, a retry may be served."""
    return ApiError(503, message, "server_error", None, code, {"Retry-After": "1"})


def engine_error(e: Exception) -> ApiError:
    """A runner's error item: Overloaded is 503, LmlabError the request's fault (400), anything
    else ours (500)."""
    if isinstance(e, Overloaded):
        return overloaded(str(e), "queue_timeout")
    if isinstance(e, LmlabError):
        return ApiError(400, str(e))
    return ApiError(500, f"engine error: {type(e).__name__}: {e}", "server_error")
