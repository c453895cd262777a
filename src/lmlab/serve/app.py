"""The FastAPI app: OpenAI-compatible endpoints, tokenizer probes, health, metrics and the web chat."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError
from lmlab.serve.metrics import Metrics
from lmlab.serve.protocol import (ApiError, ChatRequest, CompletionRequest, DetokenizeRequest,
                                  EmbeddingRequest, TokenizeRequest)
from lmlab.serve.runner import EngineRunner

STATIC = Path(__file__).parent / "static"


@dataclass
class ServeConfig:
    model_name: str = "smollm2"
    api_key: str | None = None
    max_concurrency: int = 32  # sequences decoded together (the engine's batch)
    max_queue: int = 256  # requests admitted (running + waiting) before 429
    max_prompt_tokens: int | None = None  # default: the model's context - 1
    max_tokens_limit: int = 2048  # largest max_tokens a request may ask for
    default_max_tokens: int = 512  # chat default when the request gives none
    max_body_bytes: int = 1 << 20
    max_embedding_batch: int = 64


def create_app(runner, config: ServeConfig | None = None) -> FastAPI:
    """The app over a runner (`runner.EngineRunner` or `vllm_runner.VllmRunner`), started and
    stopped with the app."""
    cfg = config or ServeConfig()
    tok = runner.tokenizer
    ctx = runner.config.max_seq_len
    vocab = runner.config.vocab_size
    max_prompt = min(cfg.max_prompt_tokens or ctx - 1, ctx - 1)
    metrics = Metrics()
    state: dict[str, Any] = {"pending": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(title="lmlab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    # ---- errors --------------------------------------------------------------------------------

    def err_response(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return err_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        kind = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}.get(
            e.status_code, "invalid_request_error")
        return err_response(ApiError(e.status_code, str(e.detail), kind, None, None, getattr(e, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e: RequestValidationError):
        return err_response(_from_validation(e.errors()))

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        return err_response(ApiError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))

    class _Count:  # pure ASGI (BaseHTTPMiddleware would get in the way of streaming and disconnects)
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            t0, status = time.perf_counter(), [500]

            async def send_(msg):
                if msg["type"] == "http.response.start":
                    status[0] = msg["status"]
                await send(msg)

            try:
                await self.inner(scope, receive, send_)
            finally:
                metrics.request(scope["path"], status[0], time.perf_counter() - t0)

    app.add_middleware(_Count)

    # ---- helpers -------------------------------------------------------------------------------

    def check_key(request: Request) -> None:
        if not cfg.api_key:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not given or not hmac.compare_digest(given.encode(), cfg.api_key.encode()):
            raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request, schema: type[BaseModel]):
        check_key(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise ApiError(413, f"request body is {int(length)} bytes; the limit is {cfg.max_body_bytes}",
                           code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_body_bytes:
                raise ApiError(413, f"request body exceeds the limit of {cfg.max_body_bytes} bytes",
                               code="request_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ApiError(400, f"body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object", code="invalid_json")
        try:
            body = schema.model_validate(data)
        except ValidationError as e:
            raise _from_validation(e.errors()) from None
        model = getattr(body, "model", None)
        if model is not None and model != cfg.model_name:
            raise ApiError(404, f"model {model!r} does not exist; this server serves {cfg.model_name!r}",
                           param="model", code="model_not_found")
        return body

    def check_prompt(ids: list[int], param: str = "prompt") -> list[int]:
        if not ids:
            raise ApiError(400, "empty prompt: nothing to continue", param=param)
        if len(ids) > max_prompt:
            raise ApiError(400, f"prompt has {len(ids)} tokens; the limit is {max_prompt} "
                                f"(the model's context is {ctx})", param=param, code="context_length_exceeded")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is outside the vocabulary [0, {vocab})", param=param)
        return ids

    def sampling(body, max_tokens: int, logprobs: int | None, prompt_logprobs: int | None = None) -> SamplingParams:
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(400, f"max_tokens is {max_tokens}; the limit is {cfg.max_tokens_limit}", param="max_tokens")
        if body.n > cfg.max_concurrency or (body.best_of or 0) > cfg.max_concurrency:
            raise ApiError(400, f"n/best_of must be <= {cfg.max_concurrency}", param="n")
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
        kw = dict(max_tokens=max_tokens, n=body.n, best_of=body.best_of, seed=body.seed,
                  presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                  logit_bias=bias, stop=body.stop or [], stop_token_ids=body.stop_token_ids or [],
                  ignore_eos=body.ignore_eos, min_tokens=body.min_tokens, logprobs=logprobs,
                  prompt_logprobs=prompt_logprobs)
        for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
            if getattr(body, name) is not None:
                kw[name] = getattr(body, name)
        if body.seed is not None and not -2**63 <= body.seed < 2**63:
            raise ApiError(400, "seed must fit in 64 bits", param="seed")
        try:
            return SamplingParams(**kw)
        except LmlabError as e:
            msg = str(e)
            raise ApiError(400, msg, param=msg.split(" ", 1)[0]) from None

    def admit(ids: list[int], params: SamplingParams, count: int = 1, stream: bool = False):
        if state["pending"] + count > cfg.max_queue:
            metrics.rejected += 1
            raise ApiError(429, f"server busy: {state['pending']} requests in flight (limit {cfg.max_queue}); retry",
                           "rate_limit_error", None, "queue_full", {"Retry-After": "1"})
        state["pending"] += 1
        metrics.prompt_tokens += len(ids)
        return runner.add(ids, params, stream)

    def release(rid: str, finished: bool) -> None:
        state["pending"] -= 1
        if not finished:
            runner.abort(rid)

    async def collect(request: Request, jobs: list[tuple[str, asyncio.Queue]]):
        """Wait for every job's RequestOutput; abort them all if the client goes away."""
        t0 = checked = time.perf_counter()
        outs: list = [None] * len(jobs)
        try:
            for i, (rid, q) in enumerate(jobs):
                while outs[i] is None:
                    try:
                        kind, item = await asyncio.wait_for(q.get(), timeout=0.25)
                    except asyncio.TimeoutError:
                        kind = item = None
                    if time.perf_counter() - checked > 0.25:
                        checked = time.perf_counter()
                        if await request.is_disconnected():
                            metrics.disconnects += 1
                            raise ApiError(499, "client disconnected", code="client_closed") from None
                    if kind is None:
                        continue
                    if kind == "error":
                        raise _engine_error(item)
                    if kind == "done":
                        outs[i] = item
        finally:
            for (rid, _), out in zip(jobs, outs):
                release(rid, out is not None)
        metrics.e2e.observe(time.perf_counter() - t0)
        for out in outs:
            metrics.generation_tokens += sum(len(c.token_ids) for c in out.outputs)
        return outs

    def token_str(t: int) -> str:
        return tok.decode([t], skip_special_tokens=False)

    def limit_tokens(max_tokens: int | None, n_prompt: int, default: int) -> int:
        if max_tokens is None:
            return max(1, min(default, ctx - n_prompt))
        if max_tokens < 0:
            raise ApiError(400, f"max_tokens must be >= 0, got {max_tokens}", param="max_tokens")
        return max_tokens

    # ---- chat ----------------------------------------------------------------------------------

    def chat_logprobs_entry(token_id: int, lp: dict[int, float], k: int) -> dict:
        s = token_str(token_id)
        top = sorted(lp.items(), key=lambda kv: -kv[1])[:k]
        return {"token": s, "logprob": lp[token_id], "bytes": list(s.encode()),
                "top_logprobs": [{"token": token_str(i), "logprob": v, "bytes": list(token_str(i).encode())}
                                 for i, v in top]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body: ChatRequest = await read_body(request, ChatRequest)
        messages = []
        for m in body.messages:
            content = m.content
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
        try:
            ids = tok.encode_chat(messages)
        except LmlabError as e:
            raise ApiError(400, str(e), param="messages") from None
        check_prompt(ids, "messages")
        mt = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        if mt == 0:
            raise ApiError(400, "max_tokens must be >= 1 for chat", param="max_tokens")
        max_tokens = limit_tokens(mt, len(ids), cfg.default_max_tokens)
        k = body.top_logprobs or 0
        if body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        params = sampling(body, max_tokens, k if body.logprobs else None)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        rid, q = admit(ids, params, stream=body.stream)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _sse(chat_stream(request, rid, q, cid, created, len(ids), body.n, k, body.logprobs, include_usage))
        out = (await collect(request, [(rid, q)]))[0]
        choices = []
        for c in out.outputs:
            lp = None
            if body.logprobs:
                lp = {"content": [chat_logprobs_entry(t, d, k) for t, d in zip(c.token_ids, c.logprobs or [])]}
            choices.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                            "logprobs": lp, "finish_reason": _reason(c.finish_reason)})
        n_out = sum(len(c.token_ids) for c in out.outputs)
        return {"id": cid, "object": "chat.completion", "created": created, "model": cfg.model_name,
                "choices": choices, "usage": _usage(len(ids), n_out)}

    async def chat_stream(request, rid, q, cid, created, n_prompt, n, k, want_lp, include_usage):
        t0 = time.perf_counter()
        first = last = None
        generated, finished, done = 0, 0, False
        head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name}
        try:
            for i in range(n):
                yield _data({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}]})
            while not done:
                kind, item = await q.get()
                if kind == "error":
                    e = _engine_error(item)
                    yield _data(e.body())
                    done = True
                    break
                if kind == "done":
                    done = True
                    generated = sum(len(c.token_ids) for c in item.outputs)
                    break
                d = item
                now = time.perf_counter()
                if d.token_id is not None:
                    if first is None:
                        first = now
                        metrics.ttft.observe(now - t0)
                    elif last is not None:
                        metrics.itl.observe(now - last)
                    last = now
                if not d.text and d.finish_reason is None and not (want_lp and d.logprobs):
                    continue
                choice = {"index": d.index, "delta": {"content": d.text} if d.text or d.finish_reason is None else {},
                          "logprobs": None, "finish_reason": _reason(d.finish_reason)}
                if want_lp and d.logprobs is not None and d.token_id is not None:
                    choice["logprobs"] = {"content": [chat_logprobs_entry(d.token_id, d.logprobs, k)]}
                yield _data({**head, "choices": [choice]})
                finished += d.finish_reason is not None
            if include_usage:
                yield _data({**head, "choices": [], "usage": _usage(n_prompt, generated)})
            yield "data: [DONE]\n\n"
        finally:
            if not done:
                metrics.disconnects += 1
            metrics.generation_tokens += generated
            metrics.e2e.observe(time.perf_counter() - t0)
            release(rid, done)

    # ---- completions ---------------------------------------------------------------------------

    def prompt_list(prompt, limit: int, param: str) -> list[list[int]]:
        """Token ids of each prompt (a string, strings, ids or lists of ids), each checked."""
        if isinstance(prompt, str):
            prompts = [tok.encode(prompt)]
        elif not prompt:
            raise ApiError(400, f"empty {param}", param=param)
        elif isinstance(prompt[0], str):
            prompts = [tok.encode(p) for p in prompt]
        elif isinstance(prompt[0], int):
            prompts = [list(prompt)]
        else:
            prompts = [list(p) for p in prompt]
        if len(prompts) > limit:
            raise ApiError(400, f"at most {limit} {param}s per request", param=param)
        return [check_prompt(p, param) for p in prompts]

    def legacy_logprobs(ids: list[int], lps: list, offset0: int) -> dict:
        tokens, token_lps, tops, offsets = [], [], [], []
        pos = offset0
        for t, d in zip(ids, lps):
            s = token_str(t)
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
                    top.setdefault(token_str(i), v)
                tops.append(top)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionRequest = await read_body(request, CompletionRequest)
        prompts = prompt_list(body.prompt, cfg.max_queue, "prompt")
        mt = limit_tokens(body.max_tokens, max(len(p) for p in prompts), 16)
        k = body.logprobs
        if k is not None and not 0 <= k <= 20:
            raise ApiError(400, f"logprobs must be in [0, 20], got {k}", param="logprobs")
        if body.stream and (body.echo or mt == 0):
            raise ApiError(400, "echo and max_tokens=0 are not supported with stream", param="stream")
        params = sampling(body, max(mt, 1), k, k if (body.echo and k is not None) else None)
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        jobs = [admit(p, params, len(prompts) - i, body.stream) for i, p in enumerate(prompts)]
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _sse(completion_stream(jobs, cid, created, body.n, k, sum(map(len, prompts)), include_usage))
        outs = await collect(request, jobs)
        choices, n_out = [], 0
        for pi, (ids, out) in enumerate(zip(prompts, outs)):
            for c in out.outputs:
                gen_ids, gen_lps, text = c.token_ids, c.logprobs or [], c.text
                if mt == 0:
                    gen_ids, gen_lps, text, reason = [], [], "", "length"
                else:
                    reason = _reason(c.finish_reason)
                n_out += len(gen_ids)
                prompt_text = tok.decode(ids, skip_special_tokens=False) if body.echo else ""
                lp = None
                if k is not None:
                    all_ids, all_lps = list(gen_ids), list(gen_lps)
                    if body.echo:
                        all_ids, all_lps = ids + all_ids, list(out.prompt_logprobs or [None] * len(ids)) + all_lps
                    lp = legacy_logprobs(all_ids, all_lps, 0)
                choices.append({"index": pi * body.n + c.index, "text": prompt_text + text, "logprobs": lp,
                                "finish_reason": reason})
        return {"id": cid, "object": "text_completion", "created": created, "model": cfg.model_name,
                "choices": choices, "usage": _usage(sum(map(len, prompts)), n_out)}

    async def completion_stream(jobs, cid, created, n, k, n_prompt, include_usage):
        head = {"id": cid, "object": "text_completion", "created": created, "model": cfg.model_name}
        t0 = time.perf_counter()
        done = [False] * len(jobs)
        generated, first = 0, None
        offsets: dict[int, int] = {}
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(i, q):
            while True:
                item = await q.get()
                await merged.put((i, item))
                if item[0] in ("done", "error"):
                    return

        tasks = [asyncio.create_task(pump(i, q)) for i, (_, q) in enumerate(jobs)]
        try:
            while not all(done):
                i, (kind, item) = await merged.get()
                if kind in ("done", "error"):
                    done[i] = True
                    if kind == "error":
                        yield _data(_engine_error(item).body())
                    else:
                        generated += sum(len(c.token_ids) for c in item.outputs)
                    continue
                d = item
                if d.token_id is not None:
                    if first is None:
                        first = time.perf_counter()
                        metrics.ttft.observe(first - t0)
                if not d.text and d.finish_reason is None and not (k is not None and d.logprobs):
                    continue
                idx = i * n + d.index
                lp = None
                if k is not None and d.logprobs is not None and d.token_id is not None:
                    lp = legacy_logprobs([d.token_id], [d.logprobs], offsets.get(idx, 0))
                offsets[idx] = offsets.get(idx, 0) + len(d.text)
                yield _data({**head, "choices": [{"index": idx, "text": d.text, "logprobs": lp,
                                                  "finish_reason": _reason(d.finish_reason)}]})
            if include_usage:
                yield _data({**head, "choices": [], "usage": _usage(n_prompt, generated)})
            yield "data: [DONE]\n\n"
        finally:
            for t in tasks:
                t.cancel()
            if not all(done):
                metrics.disconnects += 1
            metrics.generation_tokens += generated
            for (rid, _), fin in zip(jobs, done):
                release(rid, fin)

    # ---- embeddings ----------------------------------------------------------------------------

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body: EmbeddingRequest = await read_body(request, EmbeddingRequest)
        inputs = prompt_list(body.input, cfg.max_embedding_batch, "input")
        if body.dimensions is not None:
            raise ApiError(400, "dimensions is not supported: the embedding size is the model's hidden size",
                           param="dimensions")
        vectors = await runner.embed(inputs)
        data = []
        for i, v in enumerate(vectors):
            if body.encoding_format == "base64":
                import base64
                import struct
                v = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            data.append({"object": "embedding", "index": i, "embedding": v})
        n = sum(map(len, inputs))
        return {"object": "list", "data": data, "model": cfg.model_name,
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    # ---- models, tokenizer, health, metrics, page ----------------------------------------------

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "lmlab", "max_model_len": ctx}]}

    @app.get("/v1/models/{name}")
    async def model_info(name: str, request: Request):
        check_key(request)
        if name != cfg.model_name:
            raise ApiError(404, f"model {name!r} does not exist", param="model", code="model_not_found")
        return {"id": cfg.model_name, "object": "model", "created": 0, "owned_by": "lmlab", "max_model_len": ctx}

    async def tokenizer_info(request: Request):
        check_key(request)
        return {"tokenizer_class": "PreTrainedTokenizerFast", "model": cfg.model_name,
                "eos_token": tok.special_tokens.get("eos_token"), "bos_token": tok.special_tokens.get("bos_token"),
                "pad_token": tok.special_tokens.get("pad_token"), "eos_token_id": tok.eos_token_id,
                "bos_token_id": tok.bos_token_id, "model_max_length": ctx, "max_model_len": ctx,
                "vocab_size": tok.vocab_size, "chat_template": tok.chat_template}

    async def tokenize(request: Request):
        body: TokenizeRequest = await read_body(request, TokenizeRequest)
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "give exactly one of prompt or messages", param="prompt")
        if body.prompt is not None:
            ids = tok.encode(body.prompt, add_special_tokens=body.add_special_tokens)
        else:
            try:
                ids = tok.encode_chat([m.model_dump(exclude_none=True) for m in body.messages],
                                      body.add_generation_prompt)
            except LmlabError as e:
                raise ApiError(400, str(e), param="messages") from None
        return {"tokens": ids, "count": len(ids), "max_model_len": ctx}

    async def detokenize(request: Request):
        body: DetokenizeRequest = await read_body(request, DetokenizeRequest)
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is outside the vocabulary [0, {vocab})", param="tokens")
        return {"prompt": tok.decode(body.tokens, skip_special_tokens=False)}

    for prefix in ("", "/v1"):
        app.add_api_route(prefix + "/tokenizer_info", tokenizer_info, methods=["GET"])
        app.add_api_route(prefix + "/tokenize", tokenize, methods=["POST"])
        app.add_api_route(prefix + "/detokenize", detokenize, methods=["POST"])

    @app.get("/health")
    async def health():
        ok = runner.alive()
        return JSONResponse({"status": "ok" if ok else "starting", "model": cfg.model_name},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prom(request: Request):
        check_key(request)
        return PlainTextResponse(metrics.render(state["pending"], runner.running, runner.waiting, runner.steps,
                                                runner.step_errors),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)

    app.state.config, app.state.serve_state, app.state.metrics = cfg, state, metrics
    return app


# ---- module helpers ----------------------------------------------------------------------------


def _from_validation(errors) -> ApiError:
    e = errors[0] if errors else {}
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = e.get("msg", "invalid request")
    return ApiError(400, f"{param}: {msg}" if param else msg, param=param, code="invalid_type"
                    if "type" in e.get("type", "") or "parsing" in e.get("type", "") else e.get("type"))


def _engine_error(e: Exception) -> ApiError:
    if isinstance(e, LmlabError):
        return ApiError(400, str(e))
    return ApiError(500, f"engine error: {type(e).__name__}: {e}", "server_error")


def _reason(r: str | None) -> str | None:
    return None if r is None else ("stop" if r == "abort" else r)


def _usage(p: int, c: int) -> dict:
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _data(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, allow_nan=False, default=_nan)}\n\n"


def _nan(x):
    return None


def _sse(gen) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str | None = None, weights: str = "fp32", host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, max_concurrency: int = 32, max_queue: int = 256,
          compile: bool = False, served_model_name: str | None = None, log_level: str = "info",
          engine: str = "lmlab", **limits) -> None:
    """Load a model and serve it until interrupted; engine: "lmlab" (this package's, CPU or GPU)
    or "vllm" (vLLM's, on a CUDA GPU; an optional dependency)."""
    if not api_key and not _is_loopback(host):
        raise LmlabError(f"refusing to bind to {host} without an API key: pass --api-key KEY "
                         "(or bind to 127.0.0.1)")
    import uvicorn

    if engine == "vllm":
        from lmlab.serve.vllm_runner import VllmRunner

        if compile:
            raise LmlabError("--compile applies to the lmlab engine; vLLM compiles its own graphs")
        runner = VllmRunner.load(model, weights, max_concurrency)
    elif engine == "lmlab":
        from lmlab.lm import load

        runner = EngineRunner(load(model, weights, compile=compile), max_concurrency)
    else:
        raise LmlabError(f"unknown engine {engine!r}; choose lmlab or vllm")
    name = served_model_name or (Path(model).stem if model else "smollm2")
    cfg = ServeConfig(model_name=name, api_key=api_key, max_concurrency=max_concurrency, max_queue=max_queue,
                      **{k: v for k, v in limits.items() if v is not None})
    app = create_app(runner, cfg)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
