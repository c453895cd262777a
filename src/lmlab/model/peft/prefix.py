"""Prefix tuning (Li & Liang 2021): trainable keys and values for P virtual tokens in every layer,
which every real token attends to; the model itself stays frozen.

While training, the prefix is reparameterised as peft does: P embeddings pass through a two-layer
MLP (Linear, tanh, Linear) that outputs all layers' keys and values, which trains more stably
than learning them directly. After training the MLP is folded away: its output is stored as the
prefix itself (`fold`). Layout and files are peft's (PREFIX_TUNING, "prompt_embeddings" of shape
[P, layers * 2 * kv_heads * head_dim]), so peft loads our prefixes and we load peft's.

A prefix is a pre-filled KV cache: the model (`Transformer.prefix`) writes it into the cache
before a prompt's first token, and real tokens take positions P, P+1, ... as in peft. That is how
the Engine serves a prefix-tuned model unchanged. Prompt tuning (lmlab.model.peft.prompt) is the
same at inference: its soft prompt, run through the model once, becomes such a prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lmlab.engine.kv_cache import KVCache
from lmlab.errors import LmlabError
from lmlab.model.transformer import causal_mask


class KVPrefix(nn.Module):
    """Keys/values that every token attends to; subclasses say how they are computed."""

    def __init__(self, length: int):
        super().__init__()
        if length < 1:
            raise LmlabError(f"the number of virtual tokens must be >= 1, got {length}")
        self.length = length
        self._kv = None  # computed once for inference; training recomputes every forward

    def compute(self, model) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (k, v), each [1, kv_heads, P, head_dim]."""
        raise NotImplementedError

    def kv(self, model):
        if self.training or torch.is_grad_enabled():
            self._kv = None
            return self.compute(model)
        if self._kv is None:
            self._kv = self.compute(model)
        return self._kv

    def attach(self, model, idx, positions, key_mask, cache, segments):
        """What Transformer.hidden_states runs with: (positions, key_mask, cache) with the prefix
        in front. Without a cache (training, scoring) a cache holding only the prefix is made; a
        fresh KVCache (the Engine's prefill) gets the prefix written into it; a cache that
        already holds it (decoding) is left as it is."""
        B, P = idx.shape[0], self.length
        if cache is not None and cache.length > 0:
            return positions, key_mask, cache
        kv = self.kv(model)
        if positions is not None:
            positions = positions + P
        if key_mask is not None:
            key_mask = torch.cat([key_mask.new_ones(B, P), key_mask], 1)
        if cache is None:
            return positions, key_mask, _PrefixOnly(kv, segments)
        if not isinstance(cache, KVCache):
            raise LmlabError("a prefix is written into a fresh KVCache before the prompt")
        for layer, (k, v) in enumerate(kv):
            cache.update(layer, k.expand(B, -1, -1, -1).to(cache.k[layer].dtype),
                         v.expand(B, -1, -1, -1).to(cache.v[layer].dtype))
        cache.advance(P)
        return positions, key_mask, cache


class _PrefixOnly:
    """A KV cache that holds just a prefix: each layer attends to [prefix; this forward's keys]."""

    def __init__(self, kv, segments):
        self.kv, self.segments = kv, segments
        self.length = kv[0][0].shape[2]

    def update(self, layer, k, v):
        pk, pv = self.kv[layer]
        B = k.shape[0]
        return (torch.cat([pk.expand(B, -1, -1, -1).to(k.dtype), k], 2),
                torch.cat([pv.expand(B, -1, -1, -1).to(v.dtype), v], 2))

    def mask(self, T, key_mask, window, device):
        allowed = causal_mask(key_mask, self.length, T, window, device)
        if self.segments is None or allowed is None:
            return allowed
        # Packed rows: a token sees the prefix and its own sequence only.
        same = self.segments[:, None, :, None] == self.segments[:, None, None, :]
        prefix = torch.ones(*same.shape[:-1], self.length, dtype=torch.bool, device=device)
        return allowed & torch.cat([prefix, same], -1)

    def advance(self, n):
        pass


class Prefix(KVPrefix):
    """Prefix tuning's parameters: reparameterised through an MLP until `fold()`."""

    def __init__(self, config, length: int, hidden: int = 512):
        super().__init__(length)
        self.layers, self.kv_heads, self.head_dim = config.n_layers, config.n_kv_heads, config.head_dim
        kv_dim = config.n_kv_heads * config.head_dim
        self.hidden = hidden
        if hidden:
            self.embedding = nn.Embedding(length, kv_dim)
            self.transform = nn.Sequential(nn.Linear(kv_dim, hidden), nn.Tanh(),
                                           nn.Linear(hidden, config.n_layers * 2 * kv_dim))
        else:  # folded: the keys and values themselves
            self.embedding = nn.Embedding(length, config.n_layers * 2 * kv_dim)

    def flat(self) -> torch.Tensor:
        """[P, layers * 2 * kv_dim], peft's layout: layer l's key at 2l, its value at 2l+1."""
        w = self.embedding.weight
        return self.transform(w) if self.hidden else w

    def compute(self, model):
        kv = self.flat().view(self.length, 2 * self.layers, self.kv_heads, self.head_dim).permute(1, 2, 0, 3)
        return [(kv[2 * l][None], kv[2 * l + 1][None]) for l in range(self.layers)]

    @torch.no_grad()
    def fold(self) -> "Prefix":
        """Replace the MLP by its output: what inference needs, nothing more."""
        if self.hidden:
            flat = self.flat()
            self.embedding = nn.Embedding(self.length, flat.shape[1], _weight=flat.clone())
            del self.transform
            self.hidden = 0
        return self


def apply_prefix(model, length: int = 16, hidden: int = 512) -> nn.Module:
    """Freeze the model and give it a trainable prefix (in place)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.prefix = Prefix(model.config, length, hidden).to(model.embed.weight.device)
    return model


def save_prefix(model, out_dir: str | Path, base_model: str = "") -> Path:
    """peft's PREFIX_TUNING files, the prefix folded (inference_mode)."""
    from safetensors.torch import save_file

    p = model.prefix
    flat = (p.flat() if p.hidden else p.embedding.weight).detach().float().contiguous()
    c = model.config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"prompt_embeddings": flat}, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
              "num_virtual_tokens": p.length, "token_dim": c.n_kv_heads * c.head_dim,
              "num_attention_heads": c.n_kv_heads, "num_layers": c.n_layers, "num_transformer_submodules": 1,
              "encoder_hidden_size": p.hidden or c.n_kv_heads * c.head_dim, "prefix_projection": bool(p.hidden),
              "inference_mode": True}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def load_prefix(model, adapter_dir: str | Path, config: dict) -> nn.Module:
    from safetensors.torch import load_file

    flat = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))["prompt_embeddings"]
    c = model.config
    if flat.shape != (config["num_virtual_tokens"], c.n_layers * 2 * c.n_kv_heads * c.head_dim):
        raise LmlabError(f"{adapter_dir}: prefix of shape {tuple(flat.shape)} does not fit this model")
    apply_prefix(model, config["num_virtual_tokens"], hidden=0)
    model.prefix.embedding.weight.data.copy_(flat)
    return model
