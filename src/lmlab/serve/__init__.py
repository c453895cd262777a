"""An OpenAI-compatible HTTP server and web chat over lmlab's engine (`lmlab serve`).

`create_app(runner, config)` builds the FastAPI app over a runner, `EngineRunner` (lmlab's engine,
owned by one background thread) or `VllmRunner` (vLLM's engine on a GPU); request handlers
receive deltas on per-request asyncio queues. `serve(config)` loads a model and runs uvicorn.
Modules: config (ServeConfig), protocol (request bodies, checks, SamplingParams), server (what
the routes share), streaming (server-sent events), routes/ (one module per endpoint family),
runner and vllm_runner, metrics, app.

Names are imported on first use, so the CLI can read ServeConfig without loading FastAPI.
"""

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name == "ServeConfig":
        from lmlab.serve.config import ServeConfig

        return ServeConfig
    if name in ("create_app", "serve"):
        from lmlab.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'lmlab.serve' has no attribute {name!r}")
