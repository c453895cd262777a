"""What operators and clients probe: /v1/models, /health, /metrics, and the web chat page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from lmlab.serve.protocol import ApiError

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter()


def _model_card(server) -> dict:
    return {"id": server.cfg.model_name, "object": "model", "created": 0, "owned_by": "lmlab",
            "max_model_len": server.ctx}


@router.get("/v1/models")
async def models(request: Request):
    server = request.app.state.server
    server.check_key(request)
    return {"object": "list", "data": [_model_card(server)]}


@router.get("/v1/models/{name}")
async def model_info(name: str, request: Request):
    server = request.app.state.server
    server.check_key(request)
    if name != server.cfg.model_name:
        raise ApiError(404, f"model {name!r} does not exist", param="model", code="model_not_found")
    return _model_card(server)


@router.get("/health")
async def health(request: Request):
    server = request.app.state.server
    ok = server.runner.alive()
    return JSONResponse({"status": "ok" if ok else "starting", "model": server.cfg.model_name},
                        status_code=200 if ok else 503)


@router.get("/metrics")
async def prom(request: Request):
    server = request.app.state.server
    server.check_key(request)
    r = server.runner
    return PlainTextResponse(server.metrics.render(server.pending, r.running, r.waiting, r.steps, r.step_errors,
                                                   getattr(r, "kv_cache_bytes", 0)),
                             media_type="text/plain; version=0.0.4")


@router.get("/")
async def index():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/favicon.ico")
async def favicon():
    return Response(status_code=204)
