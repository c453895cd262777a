"""The FastAPI app: the shared `Server`, the routes (lmlab.serve.routes), errors in OpenAI's
shape, request metrics; and `serve(config)`, which loads a model and runs uvicorn."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import sys
import time

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmlab.errors import LmlabError
from lmlab.serve.config import ServeConfig
from lmlab.serve.guard import Guard, ReadTimeoutH11
from lmlab.serve.protocol import ApiError, from_validation
from lmlab.serve.routes import chat, completions, embeddings, health, rag, tokenize
from lmlab.serve.server import Server

__all__ = ["ServeConfig", "create_app", "serve"]


def create_app(runner, config: ServeConfig | None = None) -> FastAPI:
    """The app over a runner (`runner.EngineRunner` or `vllm_runner.VllmRunner`), started and
    stopped with the app."""
    server = Server(runner, config or ServeConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(title="lmlab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
    app.state.config, app.state.metrics = server.cfg, server.metrics
    for area in (chat, completions, embeddings, tokenize, health, rag):
        app.include_router(area.router)
    _add_error_handlers(app)
    app.add_middleware(Guard, config=server.cfg)  # Host, content type, 500s that keep the connection
    if server.cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=server.cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key"])
    app.add_middleware(_Count, metrics=server.metrics)
    return app


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        kind = {401: "authentication_error", 404: "not_found_error"}.get(e.status_code, "invalid_request_error")
        return _error(ApiError(e.status_code, str(e.detail), kind, None, None, getattr(e, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e: RequestValidationError):
        return _error(from_validation(e.errors()))
    # Anything else a route raises is Guard's 500 (Starlette's handler for Exception re-raises,
    # which makes uvicorn reset the connection).


class _Count:
    """Counts every response by path and status, and times it (pure ASGI: BaseHTTPMiddleware
    would get in the way of streaming and disconnects)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def send_(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_)
        finally:
            self.metrics.request(scope["path"], status[0], time.perf_counter() - t0)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_runner(cfg: ServeConfig):
    """The runner `cfg.engine` names, over the model `cfg.model` in `cfg.weights`."""
    if cfg.engine == "vllm":
        from lmlab.serve.vllm_runner import VllmRunner

        if cfg.compile:
            raise LmlabError("--compile applies to the lmlab engine; vLLM compiles its own graphs")
        return VllmRunner.load(cfg.model, cfg.weights, cfg.max_concurrency)
    if cfg.engine == "lmlab":
        from lmlab.lm import load
        from lmlab.serve.runner import EngineRunner

        if not cfg.max_queue_wait > 0:
            raise LmlabError(f"max_queue_wait must be > 0 seconds, got {cfg.max_queue_wait}")
        return EngineRunner(load(cfg.model, cfg.weights, compile=cfg.compile, workload="many-streams"),
                            cfg.max_concurrency, max_cache_tokens=cfg.max_cache_tokens,
                            prefill_chunk=cfg.prefill_chunk, max_wait=cfg.max_queue_wait)
    raise LmlabError(f"unknown engine {cfg.engine!r}; choose lmlab or vllm")


def serve(config: ServeConfig | None = None, **values) -> None:
    """Load a model and serve it until interrupted. `config` (or ServeConfig(**values)) says
    which model, engine ("lmlab": this package's, CPU or GPU; "vllm": vLLM's on a CUDA GPU),
    address and limits; the resolved config is printed as one line at start-up."""
    cfg = config or ServeConfig(**values)
    if not cfg.api_key and not _is_loopback(cfg.host):
        raise LmlabError(f"refusing to bind to {cfg.host} without an API key: pass --api-key KEY "
                         "(or bind to 127.0.0.1)")
    import uvicorn

    runner = load_runner(cfg)
    print(f"lmlab serve: http://{cfg.host}:{cfg.port} config {json.dumps(cfg.redacted())}", file=sys.stderr,
          flush=True)
    server = uvicorn.Server(uvicorn_config(create_app(runner, cfg), cfg))
    server.run()
    if not server.started:
        raise LmlabError(f"could not serve on {cfg.host}:{cfg.port} (see uvicorn's message above)")


def uvicorn_config(app, cfg: ServeConfig):
    """uvicorn's settings for `app`: h11 with a read deadline (`guard.ReadTimeoutH11`)."""
    import uvicorn

    if not cfg.read_timeout > 0:
        raise LmlabError(f"read_timeout must be > 0 seconds, got {cfg.read_timeout}")
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, timeout_graceful_shutdown=2,
                          http=ReadTimeoutH11.with_timeout(cfg.read_timeout))
