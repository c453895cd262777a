"""A decoder-only transformer in plain PyTorch.

Two families share one Block:
- "llama" (Llama, Mistral, Qwen2, SmolLM2): RMSNorm, RoPE, grouped-query attention, SwiGLU MLP;
- "gpt2": LayerNorm, learned positions, multi-head attention with biases, GELU MLP.

Attention runs through torch's scaled_dot_product_attention. A KV cache is any object with
`length` (tokens already cached), `update(layer, k, v) -> (k_all, v_all)`, `mask(T, key_mask,
window, device)` and `advance(T)`; see `lmlab.engine.kv_cache`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmlab.model.config import ModelConfig
from lmlab.model.moe import MoE
from lmlab.model.rope import Rotary, apply_rotary


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Normalise in fp32 whatever the activation dtype, as the reference implementations do.
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


class Attention(nn.Module):
    # An attention for decode steps (one query per row, keys from a cache), installed from outside
    # where a faster one exists (lmlab.cpu); called as decode_attention(q, k, v, mask, scale).
    decode_attention = None

    def __init__(self, c: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.n_heads, self.n_kv_heads, self.head_dim = layer, c.n_heads, c.n_kv_heads, c.head_dim
        # q, k and v in one matmul (as nanoGPT's c_attn): one weight read, one call per layer.
        self.qkv_proj = nn.Linear(c.dim, (c.n_heads + 2 * c.n_kv_heads) * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=c.o_bias)

    def forward(self, x, rope, mask, cache):
        B, T, _ = x.shape
        H, Hkv = self.n_heads, self.n_kv_heads
        qkv = self.qkv_proj(x).view(B, T, H + 2 * Hkv, self.head_dim)  # the q, k and v heads side by side
        qk, v = qkv[:, :, :H + Hkv], qkv[:, :, H + Hkv:].transpose(1, 2)
        if rope is not None:
            qk = apply_rotary(qk, *rope)  # q and k heads in one call: decoding is bound by op count
        q, k = qk.transpose(1, 2).split([H, Hkv], dim=1)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if T == 1 and cache is not None and self.decode_attention is not None:
            y = self.decode_attention(q, k, v, mask, self.head_dim ** -0.5)
        else:  # mask=None means plain causal attention over everything cached (no padding, no window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                               enable_gqa=self.n_heads != self.n_kv_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


ACT = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


class GatedMLP(nn.Module):
    """Llama's SwiGLU: down(act(gate(x)) * up(x))."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.act = ACT[c.hidden_act]
        self.gate_up_proj = nn.Linear(c.dim, 2 * c.ffn_dim, bias=c.mlp_bias)  # gate and up, fused
        self.down_proj = nn.Linear(c.ffn_dim, c.dim, bias=c.mlp_bias)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class MLP(nn.Module):
    """GPT-2's: down(act(up(x)))."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.act = ACT[c.hidden_act]
        self.up_proj = nn.Linear(c.dim, c.ffn_dim, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.ffn_dim, c.dim, bias=c.mlp_bias)

    def forward(self, x):
        return self.down_proj(self.act(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, c: ModelConfig, layer: int):
        super().__init__()
        norm = (lambda: RMSNorm(c.dim, c.norm_eps)) if c.family == "llama" else (lambda: nn.LayerNorm(c.dim, c.norm_eps))
        self.attn_norm, self.attn = norm(), Attention(c, layer)
        self.mlp_norm, self.mlp = norm(), (MoE(c) if c.n_experts else GatedMLP(c) if c.family == "llama" else MLP(c))

    def forward(self, x, rope, mask, cache):
        x = x + self.attn(self.attn_norm(x), rope, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


def _embedding(n: int, dim: int) -> nn.Embedding:
    # Passing the weight skips Embedding's own normal_ init, which on the meta device (used when
    # loading a checkpoint) costs over a second of one-off setup; init_weights does it instead.
    return nn.Embedding(n, dim, _weight=torch.empty(n, dim))


class Transformer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.config = c
        self.embed = _embedding(c.vocab_size, c.dim)
        if c.family == "gpt2":
            self.pos_embed, self.rotary = _embedding(c.max_seq_len, c.dim), None
            self.norm = nn.LayerNorm(c.dim, c.norm_eps)
        else:
            self.pos_embed, self.rotary = None, Rotary(c.head_dim, c.rope_theta, c.rope_scaling, c.max_seq_len)
            self.norm = RMSNorm(c.dim, c.norm_eps)
        self.layers = nn.ModuleList(Block(c, i) for i in range(c.n_layers))
        # Training only: recompute each block in the backward pass instead of storing activations.
        self.gradient_checkpointing = False
        # Prefix or prompt tuning: keys/values every token attends to (lmlab.model.peft.prefix).
        self.prefix = None
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        if self.embed.weight.device.type != "meta":
            self.init_weights()

    def init_weights(self, std: float = 0.02) -> None:
        """Fresh weights for pretraining: N(0, std), residual projections scaled by depth (GPT-2)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            else:
                scale = 1 / math.sqrt(2 * self.config.n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1
                nn.init.normal_(p, 0.0, std * scale)

    def hidden_states(self, idx, positions=None, key_mask=None, cache=None, segments=None):
        """Final normalised hidden states [B, T, dim].

        idx: token ids [B, T]. positions: [B, T] (default: continue from the cache length).
        key_mask: [B, S] bool, True for real tokens, S = cached + T; needed for padded batches.
        segments: [B, T] ints for packed training rows: a token attends only within its segment
        (positions should then restart at 0 for each segment).
        """
        B, T = idx.shape
        if self.prefix is not None:
            positions, key_mask, cache = self.prefix.attach(self, idx, positions, key_mask, cache, segments)
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + T, device=idx.device).expand(B, T)
        x = self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions)
            rope = None
        else:
            rope = self.rotary(positions, x.dtype)
        c = self.config
        windows = [c.sliding_window if c.windowed(i) else None for i in range(c.n_layers)]
        masks = {w: cache.mask(T, key_mask, w, idx.device) if cache is not None
                 else causal_mask(key_mask, 0, T, w, idx.device, segments) for w in set(windows)}
        for block, window in zip(self.layers, windows):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, rope, masks[window], cache, use_reentrant=False)
            else:
                x = block(x, rope, masks[window], cache)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def forward(self, idx, positions=None, key_mask=None, cache=None, last_only: bool = False, segments=None):
        """Logits [B, T, vocab] (or [B, 1, vocab] with last_only, which saves the big matmul)."""
        h = self.hidden_states(idx, positions, key_mask, cache, segments)
        return self.lm_head(h[:, -1:] if last_only else h)


def causal_mask(key_mask, start: int, T: int, window: int | None, device, segments=None):
    """Boolean [B, 1, T, S] mask for T queries after `start` cached tokens (the same for every
    row), or None when plain causal attention suffices. `key_mask` [B, S] marks real tokens;
    `segments` [B, T] (no cache) confines attention to each packed sequence."""
    S = start + T
    if key_mask is None and segments is None and (window is None or S <= window) and (start == 0 or T == 1):
        return None
    q_pos = torch.arange(start, S, device=device)[:, None]
    k_pos = torch.arange(S, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (q_pos - k_pos < window)
    allowed = allowed[None, None]
    if segments is not None:
        allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
    if key_mask is not None:
        # A query always sees itself, so rows of left-padding never become all -inf (NaN).
        allowed = allowed & (key_mask[:, None, None, :S].bool() | (k_pos == q_pos))
    return allowed
