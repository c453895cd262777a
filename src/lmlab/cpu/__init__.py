"""The CPU speed layer, applied to a model from outside by one call: `optimize(model, device, purpose)`.

What it does on a CPU (and nothing, importing nothing, on any other device):
- tunes the C library's allocator to keep freed memory for reuse (allocator.py);
- decode: swaps lmlab's own kernels in where they build (kernels.py/.cpp): attention of one query
  per row over the KV cache, int8 weight-only products (int8.py) and a fused greedy pick; packs
  fp32 weights for oneDNN on CPUs where its GEMM beats MKL's (onednn.py); gives the compile options
  for the decode step (compile.py);
- train: frozen fp32 layers (LoRA's base, a frozen output layer) multiply through oneDNN where
  that is faster (onednn.py).
The model, the engine and the objectives are plain PyTorch: they only see modules and the two
hooks the result carries (a greedy-pick function and compile options for the engine).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

PURPOSES = ("decode", "train")

WORKLOADS = ("one-stream", "many-streams", "scoring")


def choose(workload: str, device: str | torch.device = "cpu", weights: str = "auto", compile: bool | None = None):
    """The weight format and compile setting to load with (lmlab.cpu.choice; fp32 eager off the CPU,
    where nothing of this package is imported)."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    from lmlab.cpu.choice import Choice, choose as pick

    if torch.device(device).type != "cpu":
        return Choice("fp32" if weights == "auto" else weights, bool(compile), "not a CPU: the CPU table does not apply")
    return pick(workload, device, weights, compile)


@dataclass
class Speedups:
    """What the engine may use on top of the model (empty: nothing applies)."""
    greedy_pick: Callable | None = None  # logits [B, V] -> (argmax, its log-prob), fused
    compile_options: dict = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)  # what was done, for `lmlab models info` and tests


def optimize(model: torch.nn.Module, device: str | torch.device = "cpu", purpose: str = "decode",
             weights: str = "fp32", compile: bool = False, pack: bool = True) -> Speedups:
    """Apply the CPU speed layer to `model` in place for `purpose` (decode | train); `pack=False`
    keeps fp32 weights as they are (a model with adapters on top)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    out = Speedups()
    if torch.device(device).type != "cpu":
        return out
    from lmlab.cpu import allocator, features, onednn

    if allocator.tune():
        out.applied.append("allocator")
    if purpose == "train":
        if features.onednn_preferred() and onednn.frozen_through_onednn(model):
            out.applied.append("onednn-frozen")
        from lmlab.cpu import int8

        if int8.use_cpu_int8(model):  # int8 bases under LoRA (QLoRA-style)
            out.applied.append("int8-kernel")
        return out
    if weights == "w8a8" and features.has_vnni() is False:
        # measured on an AVX2-only AMD EPYC: 1 stream 6.5 tok/s vs fp32 8.4, a 40-token prompt 2.4 s vs 0.4
        warnings.warn("w8a8: this CPU has no VNNI instructions, and without them torch's integer GEMM is "
                      "slower than fp32; int8 or int4 weights are faster here", stacklevel=2)
    if pack and weights == "fp32" and not compile and features.onednn_preferred():
        onednn.pack_linears(model)  # inductor packs its own weights when compiling
        out.applied.append("onednn-packed")
    from lmlab.cpu import int8, kernels

    if int8.use_cpu_int8(model):
        out.applied.append("int8-kernel" if kernels.available() else "int8-gemv")
    if kernels.available():
        from lmlab.model.transformer import Attention

        for m in model.modules():
            if isinstance(m, Attention):
                m.decode_attention = kernels.decode_attention
        out.greedy_pick = kernels.greedy_pick
        out.applied += ["decode-attention", "greedy-pick"]
    if compile:
        from lmlab.cpu.compile import DECODE_OPTIONS, keep_cache_on_disk

        keep_cache_on_disk()
        out.compile_options = dict(DECODE_OPTIONS)
    return out
