"""GET /v1/rag/indexes, POST /v1/rag/search and /v1/rag/ask: the index folders under
`--rag-indexes DIR` (each subfolder built by `lmlab rag index`), retrieval and cited answers over
the one named by the request's `index`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal, Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lmlab.errors import LmlabError
from lmlab.serve.protocol import ApiError

router = APIRouter()
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class RagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str
    query: str = Field(min_length=1)
    k: int = Field(5, ge=1, le=100)
    mode: Literal["bm25", "dense", "hybrid"] = "hybrid"
    max_tokens: Optional[int] = Field(None, ge=1)
    min_similarity: float = 0.25


def _root(server) -> Path | None:
    root = getattr(server.cfg, "rag_indexes", None)
    if not root:
        return None
    if not Path(root).is_dir():
        raise ApiError(500, f"--rag-indexes {root}: not a folder", "server_error")
    return Path(root)


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if _NAME.fullmatch(p.name) and (p / "manifest.json").is_file())


def _summary(path: Path) -> dict:
    """What the listing tells of one index, from its manifest alone (loading the index would read
    every chunk and its search structures); an unreadable manifest is listed with why, not hidden."""
    entry = {"name": path.name, "object": "rag.index"}
    try:
        m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        return {**entry, "documents": len(m["documents"]), "chunks": int(m["chunks"]),
                "embedding_model": m["embedding_model"],
                "dense": m["config"]["dense"] if m["embedding_model"] else "none"}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {**entry, "error": f"{path / 'manifest.json'}: unreadable manifest ({type(e).__name__}: {e})"}


@router.get("/v1/rag/indexes")
async def indexes(request: Request):
    server = request.app.state.server
    server.check_key(request)
    root = _root(server)
    return {"object": "list", "data": [] if root is None else [_summary(root / n) for n in _names(root)]}


def _open(server, name: str):
    """The named index, loaded once and reloaded when its manifest changes (an update)."""
    root = _root(server)
    if root is None:
        raise ApiError(404, "this server has no RAG indexes: start it with --rag-indexes DIR", param="index")
    if not _NAME.fullmatch(name):
        raise ApiError(400, f"index must be a folder name under the server's index directory, got {name!r}",
                       param="index")
    path = root / name
    if not (path / "manifest.json").is_file():
        raise ApiError(404, f"no index {name!r}; available: {', '.join(_names(root)) or 'none'}", param="index")
    from lmlab.rag import Index

    cache = server.__dict__.setdefault("_rag_indexes", {})
    stamp = (path / "manifest.json").stat().st_mtime_ns
    if cache.get(name, (None, None))[0] != stamp:
        cache[name] = (stamp, Index.load(path))
    return cache[name][1]


@router.post("/v1/rag/search")
async def search(request: Request):
    server = request.app.state.server
    body: RagRequest = await server.read_body(request, RagRequest)
    from lmlab.rag import retrieve

    index = _open(server, body.index)
    try:
        hits = await run_in_threadpool(retrieve, index, body.query, body.k, body.mode)
    except LmlabError as e:
        raise ApiError(400, str(e), param="mode") from None
    return {"object": "list", "data": [{**h.to_dict(), "text": h.chunk.text} for h in hits]}


@router.post("/v1/rag/ask")
async def ask(request: Request):
    server = request.app.state.server
    body: RagRequest = await server.read_body(request, RagRequest)
    from lmlab.engine.params import SamplingParams
    from lmlab.rag.answer import Answer, finish, prepare

    index = _open(server, body.index)
    max_tokens = body.max_tokens or 160
    try:
        prep = await run_in_threadpool(lambda: prepare(body.query, index, body.k, body.mode, tokenizer=server.tok,
                                                       context=server.ctx, min_similarity=body.min_similarity,
                                                       max_new_tokens=max_tokens))
    except LmlabError as e:
        raise ApiError(400, str(e)) from None
    if isinstance(prep, Answer):
        return prep.to_dict()
    ids = server.check_prompt(server.tok.encode_chat(prep.messages), "query")
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, **prep.params)
    out = (await server.collect(request, [server.admit(ids, params)]))[0]
    return finish(prep, out.outputs[0].text, len(ids)).to_dict()
