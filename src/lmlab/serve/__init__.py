"""An OpenAI-compatible HTTP server and web chat over lmlab's engine (`lmlab serve`).

`create_app(lm, ...)` builds the FastAPI app; `serve(...)` loads a model and runs uvicorn. One
background thread (`EngineRunner`) owns the Engine; request handlers talk to it through a
thread-safe inbox and receive deltas on per-request asyncio queues.
"""

from lmlab.serve.app import ServeConfig, create_app, serve

__all__ = ["ServeConfig", "create_app", "serve"]
