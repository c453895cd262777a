"""Prompt tuning (Lester et al. 2021): P trainable embeddings ("soft prompt") placed before the
input; the model itself stays frozen and only the input layer's P vectors learn.

Because attention is causal, the soft prompt's keys and values never depend on what follows it:
running it through the model once gives a key/value prefix, exactly like prefix tuning's
(lmlab.model.peft.prefix), and the real tokens then attend to that prefix from positions P, P+1,
... This is how it is trained and how the Engine serves it, with one pass over the soft prompt
per forward in training and one per model at inference.

The soft prompt's vectors live in the embedding as ids V..V+P-1 after the vocabulary (V), so
the model computes them with its ordinary forward. Files are peft's (PROMPT_TUNING,
"prompt_embeddings" of shape [P, dim]).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError
from lmlab.model.peft.prefix import KVPrefix


class PromptEmbedding(nn.Module):
    """The frozen token embedding (the same Parameter, so a tied output layer stays tied) plus
    P soft-prompt rows addressed by ids V..V+P-1."""

    def __init__(self, weight: nn.Parameter, soft: torch.Tensor):
        super().__init__()
        self.weight = weight
        self.soft = nn.Parameter(soft)

    def forward(self, idx):
        V = self.weight.shape[0]
        virtual = idx >= V
        out = F.embedding(idx.clamp(max=V - 1), self.weight)
        if not virtual.any():
            return out
        return torch.where(virtual[..., None], self.soft[(idx - V).clamp(min=0)].to(out.dtype), out)


class SoftPrompt(KVPrefix):
    def __init__(self, length: int):
        super().__init__(length)
        self.busy = False  # while the soft prompt itself runs through the model

    def attach(self, model, idx, positions, key_mask, cache, segments):
        if self.busy:
            return positions, key_mask, cache
        return super().attach(model, idx, positions, key_mask, cache, segments)

    def compute(self, model):
        V = model.embed.weight.shape[0]
        ids = torch.arange(V, V + self.length, device=model.embed.weight.device)[None]
        capture = _Capture()
        self.busy = True
        try:
            model.hidden_states(ids, cache=capture)
        finally:
            self.busy = False
        return [capture.kv[layer] for layer in range(model.config.n_layers)]


class _Capture:
    """A cache that only records each layer's keys and values as the soft prompt goes through:
    it holds no position, so a block that gradient checkpointing reruns records the same again."""
    length = 0

    def __init__(self):
        self.kv = {}

    def update(self, layer, k, v):
        self.kv[layer] = (k, v)
        return k, v

    def mask(self, T, key_mask, window, device):
        return None  # plain causal attention within the soft prompt

    def advance(self, n):
        pass


def apply_prompt(model, length: int = 16, init_text_ids: list[int] | None = None, seed: int = 0) -> nn.Module:
    """Freeze the model and put a trainable soft prompt before every input (in place). The soft
    prompt starts as the embeddings of `init_text_ids` (cycled to length P) or of P random
    vocabulary tokens, which Lester et al. found far better than random vectors."""
    for p in model.parameters():
        p.requires_grad_(False)
    weight = model.embed.weight
    if init_text_ids:
        rows = torch.tensor([init_text_ids[i % len(init_text_ids)] for i in range(length)])
    else:
        rows = torch.randint(0, weight.shape[0], (length,), generator=torch.Generator().manual_seed(seed))
    model.embed = PromptEmbedding(weight, weight.detach()[rows.to(weight.device)].clone())
    model.prefix = SoftPrompt(length)
    return model


def save_prompt(model, out_dir: str | Path, base_model: str = "") -> Path:
    from safetensors.torch import save_file

    if not isinstance(model.embed, PromptEmbedding):
        raise LmlabError("the model has no soft prompt to save")
    c = model.config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"prompt_embeddings": model.embed.soft.detach().float().contiguous()},
              str(out / "adapter_model.safetensors"))
    config = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
              "num_virtual_tokens": model.prefix.length, "token_dim": c.dim, "num_attention_heads": c.n_heads,
              "num_layers": c.n_layers, "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM",
              "inference_mode": True}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def load_prompt(model, adapter_dir: str | Path, config: dict) -> nn.Module:
    from safetensors.torch import load_file

    soft = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))["prompt_embeddings"]
    if soft.shape != (config["num_virtual_tokens"], model.config.dim):
        raise LmlabError(f"{adapter_dir}: soft prompt of shape {tuple(soft.shape)} does not fit this model")
    apply_prompt(model, soft.shape[0])
    model.embed.soft.data.copy_(soft)
    return model
