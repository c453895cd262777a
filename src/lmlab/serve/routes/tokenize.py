"""The tokenizer probes (vLLM's names, with and without /v1): tokenizer_info, tokenize, detokenize."""

from __future__ import annotations

from fastapi import APIRouter, Request

from lmlab.errors import LmlabError
from lmlab.serve.protocol import ApiError, DetokenizeRequest, TokenizeRequest, chat_messages

router = APIRouter()


async def tokenizer_info(request: Request):
    server = request.app.state.server
    server.check_key(request)
    tok, ctx = server.tok, server.ctx
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model": server.cfg.model_name,
            "eos_token": tok.special_tokens.get("eos_token"), "bos_token": tok.special_tokens.get("bos_token"),
            "pad_token": tok.special_tokens.get("pad_token"), "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id, "model_max_length": ctx, "max_model_len": ctx,
            "vocab_size": tok.vocab_size, "chat_template": tok.chat_template}


async def tokenize(request: Request):
    server = request.app.state.server
    body: TokenizeRequest = await server.read_body(request, TokenizeRequest)
    if (body.prompt is None) == (body.messages is None):
        raise ApiError(400, "give exactly one of prompt or messages", param="prompt")
    if body.prompt is not None:
        ids = server.tok.encode(body.prompt, add_special_tokens=body.add_special_tokens)
    else:
        try:
            ids = server.tok.encode_chat(chat_messages(body.messages), body.add_generation_prompt)
        except LmlabError as e:
            raise ApiError(400, str(e), param="messages") from None
    return {"tokens": ids, "count": len(ids), "max_model_len": server.ctx}


async def detokenize(request: Request):
    server = request.app.state.server
    body: DetokenizeRequest = await server.read_body(request, DetokenizeRequest)
    server.check_ids(body.tokens, "tokens")
    return {"prompt": server.tok.decode(body.tokens, skip_special_tokens=False)}


for prefix in ("", "/v1"):
    router.add_api_route(prefix + "/tokenizer_info", tokenizer_info, methods=["GET"])
    router.add_api_route(prefix + "/tokenize", tokenize, methods=["POST"])
    router.add_api_route(prefix + "/detokenize", detokenize, methods=["POST"])
