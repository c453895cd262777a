"""An OpenAI-compatible HTTP server and web chat over lmlab's engine (`lmlab serve`).

`create_app(runner, ...)` builds the FastAPI app over a runner, `EngineRunner` (lmlab's engine,
owned by one background thread) or `VllmRunner` (vLLM's engine on a GPU); request handlers
receive deltas on per-request asyncio queues. `serve(...)` loads a model and runs uvicorn.
"""

from lmlab.serve.app import ServeConfig, create_app, serve

__all__ = ["ServeConfig", "create_app", "serve"]
