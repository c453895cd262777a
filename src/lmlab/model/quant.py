"""Weight formats for inference: fp32, bf16, and int8 weight-only (per output channel).

Decoding one token reads every weight once, so on a CPU its speed is set by bytes per weight:
bf16 halves them, int8 quarters them. int8 keeps activations in bf16 and uses torch's fused
int8-weight matmul where the device has one, else dequantises on the fly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError

FORMATS = ("fp32", "bf16", "int8")


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + b, with q int8 [out, in] and one scale per output row."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.register_buffer("qweight", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16),
                                                                   requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if x.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.scale)
        else:
            y = F.linear(x2, self.qweight.to(torch.bfloat16) * self.scale[:, None])
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


def convert_weights(model: nn.Module, fmt: str) -> nn.Module:
    """Convert a loaded model in place to an inference weight format."""
    if fmt not in FORMATS:
        raise LmlabError(f"unknown weight format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "fp32":
        return model.float()
    model = model.to(torch.bfloat16)
    if fmt == "int8":
        if getattr(model, "lm_head", None) is not None and model.lm_head.weight is model.embed.weight:
            model.lm_head = nn.Linear(model.config.dim, model.config.vocab_size, bias=False,
                                      device=model.embed.weight.device, dtype=torch.bfloat16)
            model.lm_head.weight = nn.Parameter(model.embed.weight.detach().clone(), requires_grad=False)
        _replace_linears(model)
    return model


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _replace_linears(child)
