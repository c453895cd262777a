"""Scaling arithmetic: parameters, training FLOPs, compute-optimal model and data sizes, and how
long a run would take on this machine.

- Training compute C ~ 6 * N * D (Kaplan et al. 2020): per token, 2N FLOPs forward and 4N
  backward, N the parameters every token passes through.
- Chinchilla (Hoffmann et al. 2022): for a budget C, loss is lowest with about 20 tokens per
  parameter, so D = 20 N and C = 120 N^2: N_opt = sqrt(C / 120), D_opt = 20 N_opt.
- MFU (model FLOPs utilisation, PaLM): achieved model FLOP/s over the hardware's peak; the model
  FLOPs per token add attention's 12 * layers * context * width to 6N.
"""

from __future__ import annotations

import math
import re
import time

import torch

from lmlab.errors import LmlabError

TOKENS_PER_PARAM = 20.0
SUFFIXES = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_count(text: str) -> float:
    """'135M' -> 1.35e8, '1e18' -> 1e18, '7B' -> 7e9."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?\d+)?)\s*([KMBGT]?)\s*", str(text), re.IGNORECASE)
    if not m:
        raise LmlabError(f"{text!r} is not a number (examples: 135M, 7B, 1e18)")
    return float(m.group(1)) * SUFFIXES[m.group(2).upper()]


def count_params(config) -> dict:
    """Exact counts for a ModelConfig, from the model built on the meta device (no memory)."""
    from lmlab.model.moe import MoE
    from lmlab.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(config)
    total = sum(p.numel() for p in model.parameters())  # a tied head is counted once
    embedding = model.embed.weight.numel() + (model.pos_embed.weight.numel() if model.pos_embed is not None else 0)
    experts = sum(m.experts.gate_up_proj.numel() + m.experts.down_proj.numel()
                  for m in model.modules() if isinstance(m, MoE))
    inactive = experts * (1 - config.experts_per_token / config.n_experts) if config.n_experts else 0
    # What each token multiplies through: everything but the embedding lookup (the output layer
    # is a matmul even when it shares the embedding's weights) and the experts it skips.
    matmul = total - embedding + (model.lm_head.weight.numel() if config.tie_embeddings else 0) - inactive
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding, "active": int(matmul)}


def flops_per_token(config, context: int) -> float:
    """Training FLOPs per token: 6 * (matmul parameters) + attention (PaLM's 12 * L * T * d)."""
    attn = 12 * config.n_layers * context * config.n_heads * config.head_dim
    return 6 * count_params(config)["active"] + attn


def training_flops(params: float, tokens: float) -> float:
    return 6 * params * tokens


def chinchilla_tokens(params: float) -> float:
    return TOKENS_PER_PARAM * params


def chinchilla_optimal(flops: float) -> tuple[float, float]:
    """(params, tokens) minimising loss for a compute budget, with D = 20 N and C = 6 N D."""
    params = math.sqrt(flops / (6 * TOKENS_PER_PARAM))
    return params, TOKENS_PER_PARAM * params


def measure_peak_flops(seconds: float = 0.5, n: int = 1024) -> float:
    """FLOP/s of a large fp32 matmul on this machine: the practical peak MFU is measured against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        done += 1
    return 2 * n ** 3 * done / (time.perf_counter() - t0)


def measure_training_flops(steps: int = 2) -> float:
    """Model FLOP/s this machine achieves training a small Llama (a 6-layer, 384-wide proxy, 4
    rows of 128 tokens): the throughput that training-time estimates divide by. Larger models
    use the hardware a little better, so estimates for them err on the long side."""
    from lmlab.model.config import ModelConfig
    from lmlab.model.transformer import Transformer

    c = ModelConfig(vocab_size=4096, dim=384, n_layers=6, n_heads=6, n_kv_heads=6, ffn_dim=1024,
                    max_seq_len=256, tie_embeddings=True)
    torch.manual_seed(0)
    model = Transformer(c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, c.vocab_size, (4, 129))

    def step():
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    tokens_per_s = steps * ids[:, 1:].numel() / (time.perf_counter() - t0)
    return tokens_per_s * flops_per_token(c, 128)


def machine_flops_per_s(refresh: bool = False) -> float:
    """measure_training_flops(), measured once per machine and kept in $LMLAB_HOME/throughput.json."""
    import json

    from lmlab.model.io.resolve import lmlab_home

    path = lmlab_home() / "throughput.json"
    if path.is_file() and not refresh:
        return json.loads(path.read_text())["model_flops_per_s"]
    rate = measure_training_flops()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_flops_per_s": rate, "measured": time.strftime("%Y-%m-%d %H:%M")}))
    return rate


def plan(params: float | None = None, flops: float | None = None, tokens: float | None = None,
         flops_per_s: float | None = None) -> dict:
    """The `lmlab scale` numbers. Give params (tokens default to Chinchilla's 20 per param) or a
    FLOP budget (model and data sized by Chinchilla); flops_per_s defaults to a measurement."""
    if (params is None) == (flops is None):
        raise LmlabError("give exactly one of a parameter count or a FLOP budget")
    if params is not None:
        tokens = tokens or chinchilla_tokens(params)
        flops = training_flops(params, tokens)
        budget = "params"
    else:
        params, tokens = chinchilla_optimal(flops)
        budget = "flops"
    if min(params, tokens, flops) <= 0:
        raise LmlabError("parameters, tokens and FLOPs must be positive")
    rate = flops_per_s or machine_flops_per_s()
    seconds = flops / rate
    return {"from": budget, "params": params, "tokens": tokens, "tokens_per_param": tokens / params,
            "train_flops": flops, "machine_flops_per_s": rate, "tokens_per_s": rate / (6 * params),
            "training_seconds": seconds, "training_time": human_time(seconds)}


def human_time(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} seconds"
