"""lmlab's own CPU kernels (kernels.cpp), compiled once on first use with torch's C++
extension builder and cached by torch (~/.cache/torch_extensions; about 20 s on 2 cores).

Where they cannot be built (no C++ compiler, no ninja) or LMLAB_NO_KERNELS=1 is set, `available()`
is False and callers keep torch's own kernels; the reason is warned once."""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cpp")


@functools.cache
def available() -> bool:
    """Whether the kernels are built and loaded (building them on the first call)."""
    if os.environ.get("LMLAB_NO_KERNELS") == "1":
        return False
    try:
        from torch.utils.cpp_extension import load

        flags = ["-O3", "-march=native", "-fopenmp"]
        # one build per instruction set: a cache shared by different CPUs must not hand an AVX-512
        # build to an AVX2 one
        name = f"lmlab_cpu_kernels_{torch.backends.cpu.get_cpu_capability().lower()}"
        _clear_stale_lock(name)
        if not _built(name):  # the one silent wait a fresh machine has: say so before it starts
            print("lmlab: building the CPU kernels once for this machine (about 20 s; cached after)",
                  file=sys.stderr, flush=True)
        load(name=name, sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
             is_python_module=False, verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build: torch's kernels still work
        warnings.warn(f"lmlab's CPU kernels could not be built ({type(e).__name__}: {str(e)[:300]}); "
                      "torch's own (slower) int8 products and attention run instead", stacklevel=2)
        return False
    torch.library.register_fake("lmlab_cpu::int8_linear")(_int8_linear_shape)
    torch.library.register_fake("lmlab_cpu::decode_attention")(lambda q, k, v, mask, scale: q.new_empty(q.shape))
    torch.library.register_fake("lmlab_cpu::greedy_pick")(
        lambda x: (x.new_empty(x.shape[0], dtype=torch.long), x.new_empty(x.shape[0])))
    return True


def _clear_stale_lock(name: str, max_age_s: float = 600) -> None:
    """torch's builder waits for ever on the lock file of a build that was killed; no build takes
    minutes, so an old lock is one that nobody holds."""
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return
    if age > max_age_s:
        warnings.warn(f"removing a stale build lock left by a killed build ({lock}, {age:.0f} s old)", stacklevel=3)
        lock.unlink(missing_ok=True)


def _built(name: str) -> bool:
    from torch.utils.cpp_extension import _get_build_directory

    return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").exists()


def _int8_linear_shape(x, q, scale):
    return x.new_empty(x.shape[0], q.shape[0])  # in x's dtype, as the kernel returns it


def int8_linear(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x @ (q * scale[:, None]).T for x [M, K] (fp32 or bf16, computed in fp32), int8 q [N, K] and
    scale [N]; made for few rows (decoding)."""
    return torch.ops.lmlab_cpu.int8_linear(x, q, scale)


def decode_attention(q, k, v, mask, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v for one query per row: q [B, H, 1, D], k and v [B, Hkv, L, D] (H a
    multiple of Hkv), mask None or boolean [B or 1, 1, 1, L] (True: the key is seen); fp32 or bf16."""
    return torch.ops.lmlab_cpu.decode_attention(q, k, v, mask, scale)


def greedy_pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For fp32 logits [B, V]: each row's argmax (the first, as torch.argmax) and its log-probability,
    as log_softmax + argmax + gather give, without the [B, V] log-softmax."""
    return torch.ops.lmlab_cpu.greedy_pick(logits)
