"""int8 weight-only products on the CPU through lmlab's own kernel, and, while compiling on an
AVX-512 CPU, as a plain reduction that inductor fuses. Swapped onto quant.Int8Linear layers by
lmlab.cpu.optimize; the format itself (quantisation, the portable forward) stays in
lmlab.model.quant."""

from __future__ import annotations

import torch

from lmlab.cpu import features, kernels
from lmlab.model.quant import Int8Linear

# With lmlab's own kernel the crossover with dequantising to fp32 is later than with torch's: at
# 256 rows both take the same time on a Zen 1 EPYC (8.1 ms for a 576 x 1536 weight), at 64 the
# kernel 1.9 ms vs 3.2.
OWN_KERNEL_DEQUANT_ROWS = 256
# Rows up to which compiled int8 decoding uses a plain reduction instead of a fused kernel.
# Inductor's loop for it streams the weight at 2.6x the kernel's bytes/s with AVX-512, but at a
# fifth of them with AVX2 (1.0 vs 5.7 GB/s on a Zen 1 EPYC): AVX-512 CPUs only.
GEMV_ROWS = 1 if features.avx512() else 0


class CpuInt8Linear(Int8Linear):
    own_kernel = False  # decided when swapped in, not in forward, so torch.compile never traces the build

    @property
    def dequant_rows(self) -> int:
        return OWN_KERNEL_DEQUANT_ROWS if self.own_kernel else super().dequant_rows

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        if x2.device.type == "cpu" and torch.compiler.is_compiling() and x2.shape[0] <= GEMV_ROWS:
            # Written as a reduction, inductor fuses the int8 -> fp32 conversion into one loop that
            # streams the weight once (one decoded row: 2.6x the fused kernel's bytes/s).
            return (x2.float()[:, None, :] * self.qweight.float()).sum(-1) * self.scale.float()
        if self.own_kernel and x2.device.type == "cpu" and x2.shape[0] < self.dequant_rows:
            return kernels.int8_linear(x2, self.qweight, self.scale)
        return super().matmul(x2)


def use_cpu_int8(model: torch.nn.Module) -> int:
    """Swap the CPU forward onto every int8 weight-only layer; how many."""
    own = kernels.available()
    if not own and not GEMV_ROWS:
        return 0
    n = 0
    for m in model.modules():
        if type(m) is Int8Linear:
            m.__class__ = CpuInt8Linear
            m.own_kernel = own
            n += 1
    return n
