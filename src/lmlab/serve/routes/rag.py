"""POST /v1/rag/search and /v1/rag/ask: retrieval and cited answers over the index folders under
`--rag-indexes DIR` (each subfolder built by `lmlab rag index`), named by the request's `index`."""

from __future__ import annotations

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


def _open(server, name: str):
    """The named index, loaded once and reloaded when its manifest changes (an update)."""
    root = getattr(server.cfg, "rag_indexes", None)
    if not root:
        raise ApiError(404, "this server has no RAG indexes: start it with --rag-indexes DIR", param="index")
    if not _NAME.fullmatch(name):
        raise ApiError(400, f"index must be a folder name under the server's index directory, got {name!r}",
                       param="index")
    path = Path(root) / name
    if not (path / "manifest.json").is_file():
        have = sorted(p.name for p in Path(root).iterdir() if (p / "manifest.json").is_file())
        raise ApiError(404, f"no index {name!r}; available: {', '.join(have) or 'none'}", param="index")
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
