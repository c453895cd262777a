"""Weight formats for inference: fp32, bf16, and int8 weight-only (per output channel).

Decoding one token reads every weight once, so on a CPU its speed is set by bytes per weight:
bf16 halves them, int8 quarters them, int4 (groups of 32 sharing a scale and a minimum, as GGUF's
Q4_1) eighths them. The quantised formats keep activations in bf16 and use torch's fused
quantised-weight matmuls on the CPU, else dequantise on the fly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError

FORMATS = ("fp32", "bf16", "int8", "int4")


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


class Int4Linear(nn.Module):
    """Asymmetric 4-bit weights in groups of `group` inputs: w = q * scale + min, q in 0..15."""

    def __init__(self, linear: nn.Linear, group: int = 32):
        super().__init__()
        w = linear.weight.detach().float()
        n, k = w.shape
        if k % group:
            raise LmlabError(f"int4 needs in_features divisible by {group}, got {k}")
        g = w.reshape(n, k // group, group)
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp(min=1e-8)
        q = ((g - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        # torch's kernel computes (q - 8) * scale + zero, so zero = min + 8 * scale.
        sz = torch.cat([scale, lo + 8 * scale], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        self.register_buffer("qweight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2))
        self.register_buffer("scales_and_zeros", sz)
        self.group, self.in_features, self.out_features = group, k, n
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16),
                                                                   requires_grad=False)

    def forward(self, x):
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(torch.bfloat16),
                                                       self.qweight, self.group, self.scales_and_zeros)
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
    if fmt in ("int8", "int4"):
        if model.lm_head.weight is model.embed.weight:  # untie: the embedding lookup stays bf16
            model.lm_head = nn.Linear(model.config.dim, model.config.vocab_size, bias=False,
                                      device=model.embed.weight.device, dtype=torch.bfloat16)
            model.lm_head.weight = nn.Parameter(model.embed.weight.detach().clone(), requires_grad=False)
        if fmt == "int4" and model.embed.weight.device.type != "cpu":
            raise LmlabError("int4 weights are implemented for the CPU only; use int8 or bf16")
        _replace_linears(model, Int8Linear if fmt == "int8" else Int4Linear)
    return model


def _replace_linears(module: nn.Module, cls) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, cls(child))
        else:
            _replace_linears(child, cls)
