"""`ServeConfig`: every setting of `lmlab serve`, typed, from YAML, flags or `key=value`.

The CLI's flags are generated from these fields (`lmlab.config.add_flags`), so a setting is
named, typed and documented here once: `lmlab serve --max-queue 64`, `lmlab serve --config
serve.yaml` and `lmlab serve max_queue=64` all reach `max_queue`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from lmlab.config import option
from lmlab.model.formats import CHOICES as WEIGHT_FORMATS, DEFAULT as DEFAULT_WEIGHTS

# Sequences decoded together by default: the engine's batch, and the n/best_of ceiling.
DEFAULT_MAX_CONCURRENCY = 32


@dataclass
class ServeConfig:
    # the model and its engine
    model: Optional[str] = option(None, "bundled name (default smollm2), HF folder, .gguf file or hub id org/name",
                                  short="-m")
    weights: str = option(DEFAULT_WEIGHTS, "inference weight format (auto: the fastest measured on this CPU kind "
                                            "for many streams)", choices=WEIGHT_FORMATS)
    compile: Optional[bool] = option(None, "torch.compile the decode step: faster, after a one-off compilation "
                                           "(default: as measured fastest on this CPU kind)")
    engine: Literal["lmlab", "vllm"] = option(
        "lmlab", "lmlab, or vllm (vLLM's engine on a CUDA GPU: pip install vllm)")
    served_model_name: Optional[str] = option(None, "the model id clients send (default: smollm2 or the --model name)")
    # the socket
    host: str = option("127.0.0.1", "bind address (non-loopback needs --api-key)")
    port: int = option(8000, "TCP port")
    api_key: Optional[str] = option(None, "require 'Authorization: Bearer KEY' (env LMLAB_API_KEY)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = option("warning", "uvicorn's log level")
    rag_indexes: Optional[str] = option(None, "folder of `lmlab rag index` folders served by /v1/rag/search|ask")
    allowed_hosts: list[str] = option(help="Host names clients may reach the server by, besides localhost and IP "
                                      "addresses of the bind address (* for any; others get 421)", factory=list)
    cors_origins: list[str] = option(help="web origins (https://app.example) answered with CORS headers; "
                                     "none by default, so other sites' pages cannot read responses", factory=list)
    read_timeout: float = option(30.0, "seconds a request's headers, then its body, may take to arrive (408 beyond)")
    # limits
    max_concurrency: int = option(DEFAULT_MAX_CONCURRENCY, "sequences decoded together (the engine's batch)")
    max_queue: int = option(256, "requests admitted (running + waiting) before 503 with Retry-After")
    max_queue_wait: float = option(30.0, "seconds a request may wait to start (for a batch slot, or room under "
                                         "--max-cache-tokens) before 503 with Retry-After (lmlab engine)")
    max_cache_tokens: Optional[int] = option(None, "ceiling on the KV cache (slots x tokens): requests wait until "
                                                   "they fit; one that never can is refused")
    prefill_chunk: int = option(512, "a longer prompt is prefilled this many tokens per step, between decode steps")
    max_prompt_tokens: Optional[int] = option(None, "longest prompt in tokens (default: the model's context - 1)")
    max_tokens_limit: int = option(2048, "largest max_tokens a request may ask for")
    default_max_tokens: int = option(512, "chat's max_tokens when the request gives none")
    default_temperature: Optional[float] = option(None, "temperature when the request gives none (default 1, "
                                                        "OpenAI's; 0 makes such requests greedy)")
    max_body_bytes: int = option(1 << 20, "largest request body (413 beyond)")
    max_embedding_batch: int = option(64, "inputs per /v1/embeddings request")
    # tool calling
    tool_example: bool = option(True, "show a worked tool call before the conversation when a request has tools "
                                      "(small models call tools only after seeing one)")

    @property
    def model_name(self) -> str:
        """The id clients send as `model`."""
        return self.served_model_name or (Path(self.model).stem if self.model else "smollm2")

    def redacted(self) -> dict:
        """The resolved config as logged at start-up (the key itself never reaches a log)."""
        from lmlab.config import to_dict

        d = to_dict(self)
        if d["api_key"]:
            d["api_key"] = "***"
        return d
