"""POST /v1/embeddings: one vector per input (the runner's pooled hidden states)."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Request

from lmlab.serve.protocol import ApiError, EmbeddingRequest

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(request: Request):
    server = request.app.state.server
    body: EmbeddingRequest = await server.read_body(request, EmbeddingRequest)
    inputs = server.prompt_list(body.input, server.cfg.max_embedding_batch, "input")
    if body.dimensions is not None:
        raise ApiError(400, "dimensions is not supported: the embedding size is the model's hidden size",
                       param="dimensions")
    vectors = await server.runner.embed(inputs)
    data = []
    for i, v in enumerate(vectors):
        if body.encoding_format == "base64":
            v = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        data.append({"object": "embedding", "index": i, "embedding": v})
    n = sum(map(len, inputs))
    return {"object": "list", "data": data, "model": server.cfg.model_name,
            "usage": {"prompt_tokens": n, "total_tokens": n}}
