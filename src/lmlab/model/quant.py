"""Weight formats for inference: fp32, bf16, int8 weight-only (per output channel), w8a8 and int4.

Decoding one token reads every weight once, so on a CPU its speed is set by bytes per weight:
bf16 halves them, int8 quarters them, int4 (groups of 32 sharing a scale and a minimum, as GGUF's
Q4_1) eighths them. int8 and int4 keep activations in bf16. On the CPU they multiply through
torch's fused quantised-weight matmuls (lmlab.cpu swaps a faster int8 kernel in where it builds);
elsewhere they dequantise on the fly.

w8a8 quantises the activations too, each row to int8 with its own scale when it arrives, and
multiplies int8 by int8 with torch's integer GEMM (VNNI here): 4-6x the fp32 GEMM at 32 rows,
which is what many concurrent streams need; the price is precision (see the decode benchmark's
perplexity table).

A prompt is the opposite case: hundreds of rows share each weight, the fused kernels are then
2-3x slower than the fp32 GEMM, so from DEQUANT_ROWS rows on the weight is dequantised to fp32
for that one matmul (a few ms per layer, against tens saved).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError
from lmlab.model.formats import FORMATS

# Rows from which dequantising to fp32 beats the fused kernel (measured, 2 AVX-512 cores: at 128
# rows int8 4.4 ms vs 2.4, at 1280 rows int8 45 / int4 41 ms vs 17; int4 unpacking costs more).
DEQUANT_ROWS = {"int8": 64, "int4": 256}


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + b, with q int8 [out, in] and one scale per output row."""

    # bf16 is what the kernel multiplies by, so round with that scale (not its fp32 original)
    scale_dtype = torch.bfloat16

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        lo, hi = w.aminmax(dim=1)
        scale = (torch.maximum(-lo, hi).float().clamp(min=1e-8) / 127).to(self.scale_dtype)
        q = _quantise_rows(w, lambda x, r: (x / scale[r, None].float()).round_().clamp_(-127, 127), torch.int8)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(self.scale_dtype),
                                                                   requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x):
        shape = x.shape
        y = self.matmul(x.reshape(-1, shape[-1]).to(torch.bfloat16))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """x2 [rows, in] in bf16 times the weight."""
        if x2.device.type != "cpu":
            return F.linear(x2, self.dequantised(torch.bfloat16))
        if x2.shape[0] >= self.dequant_rows:
            return F.linear(x2.float(), self.dequantised())
        return torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.scale)

    @property
    def dequant_rows(self) -> int:
        """Rows of input from which the weight is dequantised for the product."""
        return DEQUANT_ROWS["int8"]

    def dequantised(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight [out, in] that the kernel multiplies by, in `dtype`."""
        return self.qweight.to(dtype) * self.scale.to(dtype)[:, None]


class W8A8Linear(Int8Linear):
    """y = (xq @ q.T) * sx * scale + b: Int8Linear's weights times int8 activations xq, with one
    scale sx per input row (its largest magnitude / 127, taken at run time), accumulated in
    int32 by torch's integer GEMM."""

    # fp32 scales: a bf16-rounded one can fall below max / 127 and clip the largest weights
    # (perplexity of the decode benchmark text: +6.3% instead of +3.4%)
    scale_dtype = torch.float32

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        sx = x2.abs().amax(-1, keepdim=True).clamp_(min=1e-12) / 127
        xq = (x2 / sx).round_().clamp_(-127, 127).to(torch.int8)
        y = torch._int_mm(xq, self.qweight.t()).float() * (sx * self.scale.float())
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


class Int4Linear(nn.Module):
    """Asymmetric 4-bit weights in groups of `group` inputs: w = q * scale + min, q in 0..15."""

    def __init__(self, linear: nn.Linear, group: int = 32):
        super().__init__()
        w = linear.weight.detach()
        n, k = w.shape
        if k % group:
            raise LmlabError(f"int4 needs in_features divisible by {group}, got {k}")
        g = w.reshape(n, k // group, group)
        lo, hi = g.aminmax(dim=-1)
        scale = ((hi.float() - lo.float()) / 15).clamp(min=1e-8).to(torch.bfloat16)
        # torch's kernel computes (q - 8) * scale + zero in bf16, so zero = min + 8 * scale, and q is
        # rounded against exactly what the kernel will decode (q = 0 -> zero - 8 * scale).
        zero = (lo.float() + 8 * scale.float()).to(torch.bfloat16)
        base = zero.float() - 8 * scale.float()
        q = _quantise_rows(g, lambda x, r: (x - base[r, :, None]).div_(scale[r, :, None].float()).round_()
                           .clamp_(0, 15), torch.int32).reshape(n, k)
        sz = torch.stack([scale, zero], -1).transpose(0, 1).contiguous()  # [k / group, n, 2]
        self.register_buffer("qweight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2))
        self.register_buffer("scales_and_zeros", sz)
        self.group, self.in_features, self.out_features = group, k, n
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16),
                                                                   requires_grad=False)

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.shape[0] >= DEQUANT_ROWS["int4"] and self.out_features % 64 == 0 and _int4_block():
            y = F.linear(x2.float(), self.dequantised())
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.qweight, self.group,
                                                           self.scales_and_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


    def dequantised(self) -> torch.Tensor:
        """The fp32 weight [out, in] that the kernel multiplies by."""
        n, k, g = self.out_features, self.in_features, self.group
        q = _unpack_int4(self.qweight, n, k).view(n, k // g, g).float()
        sz = self.scales_and_zeros.float().transpose(0, 1)  # [n, k / group, 2]
        return ((q - 8) * sz[..., :1] + sz[..., 1:]).view(n, k)


def _unpack_int4(packed: torch.Tensor, n: int, k: int, block: int | None = None) -> torch.Tensor:
    """Undo torch's CPU int4 packing: per block of B output rows, a [k, B / 2] byte tile whose low
    nibbles are the block's first B / 2 rows and high nibbles the rest. B is the one torch's kernel
    uses on this CPU (64 with AVX-512, 32 with AVX2; `_int4_block` finds it)."""
    b = block or _int4_block()
    if b is None:
        raise LmlabError("int4: torch's packed layout on this CPU is not one lmlab knows; use int8 weights")
    tiles = packed.view(n // b, k, b // 2)
    return torch.cat([tiles & 15, tiles >> 4], 2).transpose(1, 2).reshape(n, k)


_BLOCK: list[int | None] = []


def _int4_block() -> int | None:
    """The packing is torch's private format: find once which block size inverts it here."""
    if not _BLOCK:
        q = torch.randint(0, 16, (128, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
        try:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
            _BLOCK.append(next((b for b in (64, 32) if tuple(packed.shape) == (128, 32)
                                and torch.equal(_unpack_int4(packed, 128, 64, b).int(), q)), None))
        except RuntimeError:
            _BLOCK.append(None)
    return _BLOCK[0]


def _quantise_rows(w: torch.Tensor, encode, dtype: torch.dtype, rows: int = 4096) -> torch.Tensor:
    """encode(fp32 rows, their slice) for blocks of rows, into one `dtype` tensor: the fp32
    temporaries stay small (a 50k-token vocabulary head alone is 100+ MB in fp32)."""
    q = torch.empty(w.shape, dtype=dtype)
    for i in range(0, w.shape[0], rows):
        q[i:i + rows] = encode(w[i:i + rows].float(), slice(i, i + rows))
    return q


def check_format(fmt: str, device: str | torch.device = "cpu") -> None:
    if fmt not in FORMATS:
        raise LmlabError(f"unknown weight format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt in ("int4", "w8a8") and torch.device(device).type != "cpu":
        raise LmlabError(f"{fmt} weights are implemented for the CPU only; use int8 or bf16")


def convert_weights(model: nn.Module, fmt: str) -> nn.Module:
    """Convert a loaded model in place to an inference weight format (blocks that
    `convert_module` already converted are left as they are)."""
    check_format(fmt, model.embed.weight.device)
    # A head tied to the embedding is untied by quantisation: the head becomes an Int8/Int4Linear
    # made from the shared weight, and the embedding lookup stays bf16.
    return convert_module(model, fmt)


def convert_module(module: nn.Module, fmt: str) -> nn.Module:
    """Convert one module in place: linears are quantised from their weights as loaded (fp32),
    then everything else floating point goes to the format's dtype. Used block by block while
    loading, so the whole model never exists in fp32 when a smaller format is asked for."""
    if fmt == "fp32":
        return module.float()
    if fmt in QUANTISED:
        _replace_linears(module, QUANTISED[fmt])
    # w8a8 rounds activations to int8 at every matmul anyway; around them fp32 is what runs
    # fastest here (bf16 elementwise ops and attention cost 10-25% of its decoding speed).
    return module.float() if fmt == "w8a8" else module.to(torch.bfloat16)


QUANTISED = {"int8": Int8Linear, "w8a8": W8A8Linear, "int4": Int4Linear}


def _replace_linears(module: nn.Module, cls) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, cls(child))
        else:
            _replace_linears(child, cls)
