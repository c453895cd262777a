"""Bottleneck adapters (Houlsby et al. 2019): after the attention and after the feed-forward
sublayer of every block, a small trainable module h + up(act(down(h))) on the sublayer's output,
before it joins the residual stream. The base model stays frozen; `up` starts at zero, so
training starts from the base model exactly.

Unlike LoRA an adapter cannot be merged into the weights (the nonlinearity sits between its two
matrices), so it stays in the model at inference: two extra small matmuls per sublayer, which is
the latency cost the method comparison measures. The model is changed in place (the sublayers
are wrapped), so the Engine runs an adapted model unchanged.

Saved as adapter_config.json (peft_type "BOTTLENECK", lmlab's own: peft has no bottleneck
adapters) + adapter_model.safetensors with our module names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lmlab.errors import LmlabError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
    def __init__(self, dim: int, size: int, act: str):
        super().__init__()
        self.down, self.act, self.up = nn.Linear(dim, size), ACTIVATIONS[act](), nn.Linear(size, dim)
        nn.init.normal_(self.down.weight, std=0.01)  # near-identity start, as in the paper
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(self.act(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)


class Adapted(nn.Module):
    """A frozen sublayer followed by its adapter."""

    def __init__(self, base: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.base, self.adapter = base, adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.base(*args, **kwargs))


def apply_adapters(model, size: int = 64, act: str = "relu") -> nn.Module:
    """Freeze the model and add an adapter after each block's attention and feed-forward."""
    if size < 1:
        raise LmlabError(f"adapter size must be >= 1, got {size}")
    if act not in ACTIVATIONS:
        raise LmlabError(f"adapter activation {act!r} unknown; choose one of {', '.join(ACTIVATIONS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    device = model.embed.weight.device
    for block in model.layers:
        block.attn = Adapted(block.attn, Bottleneck(model.config.dim, size, act).to(device))
        block.mlp = Adapted(block.mlp, Bottleneck(model.config.dim, size, act).to(device))
    model.adapter_config = {"bottleneck_size": size, "non_linearity": act}
    return model


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().contiguous() for n, p in model.named_parameters() if ".adapter." in n}


def save_adapters(model, out_dir: str | Path, base_model: str = "") -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    state = adapter_state(model)
    if not state:
        raise LmlabError("the model has no bottleneck adapters to save")
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "BOTTLENECK", "base_model_name_or_path": base_model, **model.adapter_config}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def load_adapters(model, adapter_dir: str | Path, config: dict) -> nn.Module:
    from safetensors.torch import load_file

    apply_adapters(model, config["bottleneck_size"], config["non_linearity"])
    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    expected = adapter_state(model)
    if set(state) != set(expected):
        raise LmlabError(f"{adapter_dir}: adapter tensors do not match this model's layers")
    model.load_state_dict(state, strict=False)
    return model
