"""The wire format: request bodies (pydantic), their checks, the error type, and the one
function that turns a request's sampling fields into the engine's SamplingParams.

Everything a request may say is declared and checked here; the routes (lmlab.serve.routes) only
run what a valid request asks for. New request fields (response_format, guided_json/regex/
choice/grammar, tools and tool_choice for structured output) belong in these models, are checked
by them (a 400 naming the field), and reach the engine through `sampling_params`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError


class ApiError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with `status`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Base):
    include_usage: bool = False


class _Sampling(_Base):
    """Fields shared by chat and completions (OpenAI names, plus vLLM-style extensions)."""
    model: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    n: int = 1
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # extensions
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    min_tokens: int = 0
    stop_token_ids: Optional[list[int]] = None
    ignore_eos: bool = False
    best_of: Optional[int] = None
    watermark: Optional[Union[dict, str]] = None  # green-list watermark: {"gamma", "delta"} (lmlab.safety.watermark)


class ChatMessage(_Base):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[dict[str, Any]]]] = None
    name: Optional[str] = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = None


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = 16
    echo: bool = False
    logprobs: Optional[int] = None
    suffix: Optional[str] = None


class EmbeddingRequest(_Base):
    model: Optional[str] = None
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None
    user: Optional[str] = None


class TokenizeRequest(_Base):
    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(_Base):
    model: Optional[str] = None
    tokens: list[int]


# ---- checks --------------------------------------------------------------------------------------

def from_validation(errors) -> ApiError:
    """A pydantic error list -> one 400 naming the first bad field."""
    e = errors[0] if errors else {}
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = e.get("msg", "invalid request")
    return ApiError(400, f"{param}: {msg}" if param else msg, param=param, code="invalid_type"
                    if "type" in e.get("type", "") or "parsing" in e.get("type", "") else e.get("type"))


def chat_messages(messages: list[ChatMessage]) -> list[dict]:
    """Messages as the chat template takes them: text parts joined, `developer` as `system`."""
    out = []
    for m in messages:
        content = m.content
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
    return out


def sampling_params(body: _Sampling, *, max_tokens: int, logprobs: int | None, vocab: int, max_tokens_limit: int,
                    max_n: int, prompt_logprobs: int | None = None) -> SamplingParams:
    """The engine's SamplingParams for a chat or completion request, every value checked (400
    naming the field). Structured-output fields become SamplingParams fields here too."""
    if max_tokens > max_tokens_limit:
        raise ApiError(400, f"max_tokens is {max_tokens}; the limit is {max_tokens_limit}", param="max_tokens")
    if body.n > max_n or (body.best_of or 0) > max_n:
        raise ApiError(400, f"n/best_of must be <= {max_n}", param="n")
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
    if body.seed is not None and not -2**63 <= body.seed < 2**63:
        raise ApiError(400, "seed must fit in 64 bits", param="seed")
    kw = dict(max_tokens=max_tokens, n=body.n, best_of=body.best_of, seed=body.seed,
              presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
              logit_bias=bias, stop=body.stop or [], stop_token_ids=body.stop_token_ids or [],
              ignore_eos=body.ignore_eos, min_tokens=body.min_tokens, logprobs=logprobs,
              prompt_logprobs=prompt_logprobs, watermark=body.watermark)
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
        if getattr(body, name) is not None:
            kw[name] = getattr(body, name)
    try:
        return SamplingParams(**kw)
    except LmlabError as e:
        msg = str(e)
        raise ApiError(400, msg, param=msg.split(" ", 1)[0]) from None


# ---- response pieces shared by the routes --------------------------------------------------------

def finish_reason(r: str | None) -> str | None:
    return None if r is None else ("stop" if r == "abort" else r)


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
