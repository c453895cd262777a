"""The matmul kernels behind the CPU choices in lmlab.model.quant, on this machine's CPU.

    python benchmarks/gemm_kernels.py [--threads 2]

Table 0: the CPU's own ceilings, from a loop of nothing but independent 256-bit fp32 FMAs, or of
16-bit integer multiply-adds (vpmaddwd: what lmlab's int8 kernel multiplies with on AVX2), on
every thread: no GEMM can beat them.
Table 1: fp32 GFLOP/s of torch's default GEMM (MKL on x86) and of oneDNN with a pre-packed
weight (lmlab.cpu.onednn.PackedLinear), for the bundled model's weight shapes at 1, 8, 32, 256 and 2048
rows, and their ratio: `lmlab.load` packs fp32 weights for oneDNN on non-Intel CPUs.
Table 2: decoded rows (1, 4 and 32 streams) through an int8 weight, in GB/s of int8 weight read
(and lmlab's kernel in GOP/s, against table 0's vpmaddwd ceiling):
torch's int8 kernel, lmlab's own (lmlab.cpu.kernels, what lmlab.cpu.int8 swaps onto quant.Int8Linear where it
builds) and, at one row, the plain reduction that compiled decoding uses on AVX-512 CPUs
(lmlab.cpu.int8.GEMV_ROWS).
Table 3: int8 weights times int8 activations (w8a8) at 1, 8 and 32 rows, in GOP/s: torch's
integer GEMM (what quant.W8A8Linear calls; VNNI makes it fast), fbgemm's dynamically quantised
linear (one activation scale for the whole batch, so a row's result depends on the other rows;
7-bit activations without VNNI), and the fp32 oneDNN GEMM of table 1 for scale.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from lmlab.cpu import kernels as cpu_kernels
from lmlab.cpu.features import onednn_preferred
from lmlab.cpu.onednn import PackedLinear
from lmlab.report.table import print_table

SHAPES = [(960, 576, "qkv"), (576, 576, "o"), (3072, 576, "gate_up"), (576, 1536, "down"), (49152, 576, "head")]


def best(f, n: int = 10) -> float:
    f()
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


PEAK_SOURCE = r"""
#include <torch/extension.h>
#include <omp.h>
#if defined(__AVX2__)
#include <immintrin.h>

// `iters` rounds of 8 independent 256-bit multiply-adds per thread; returns the thread count
template <bool INTEGER>
int64_t rounds(int64_t iters, double& seconds, int64_t& sink) {
  int64_t threads = 1;
  double t0 = 0, t1 = 0;
  #pragma omp parallel reduction(+ : sink)
  {
    __m256 f[8];
    __m256i a[8], x[8];
    for (int i = 0; i < 8; ++i)
      f[i] = _mm256_set1_ps(i), a[i] = _mm256_set1_epi32(i), x[i] = _mm256_set1_epi16(i + 1);
    const __m256 g = _mm256_set1_ps(0.9999f);
    __m256i y = _mm256_set1_epi16(3);
    #pragma omp barrier
    #pragma omp master
    { threads = omp_get_num_threads(); t0 = omp_get_wtime(); }
    for (int64_t n = 0; n < iters; ++n) {
      if constexpr (INTEGER) {
        for (int i = 0; i < 8; ++i) a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(x[i], y));
        y = _mm256_xor_si256(y, a[0]);  // a dependency, so that the compiler keeps every round
      } else {
        for (int i = 0; i < 8; ++i) f[i] = _mm256_fmadd_ps(f[i], g, g);
      }
    }
    #pragma omp barrier
    #pragma omp master
    t1 = omp_get_wtime();
    for (int i = 0; i < 8; ++i) sink += _mm256_extract_epi32(a[i], 0) + (int64_t)f[i][0];
  }
  seconds = t1 - t0;
  return threads;
}
#endif

// Giga-operations per second (a multiply-add counts 2) of those rounds on every OpenMP thread:
// 8 fp32 FMAs per instruction, or 8 int32 lanes that each add 2 products; 0 without AVX2.
double peak(int64_t iters, bool integer) {
#if defined(__AVX2__)
  double seconds = 0;
  int64_t sink = 0;
  const int64_t threads = integer ? rounds<true>(iters, seconds, sink) : rounds<false>(iters, seconds, sink);
  return sink == 42 ? -1.0 : double(iters) * threads * 8 * (integer ? 16 : 8) * 2 / seconds / 1e9;
#else
  return 0.0;
#endif
}
"""


def ceilings() -> dict[str, float]:
    """GOP/s of nothing but fp32 FMAs and of nothing but vpmaddwd (empty where they cannot be built)."""
    try:
        from torch.utils.cpp_extension import load_inline

        mod = load_inline("lmlab_bench_peak", PEAK_SOURCE, functions=["peak"], extra_cflags=["-O3", "-march=native",
                          "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:
        print(f"note: the ceiling loops could not be built ({type(e).__name__})")
        return {}
    out = {}
    for name, integer in (("fp32 FMA", False), ("int16 multiply-add (vpmaddwd)", True)):
        mod.peak(10 ** 6, integer)
        out[name] = max(mod.peak(2 * 10 ** 7, integer) for _ in range(3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, "
          f"lmlab packs fp32 for oneDNN here: {onednn_preferred()}")
    peaks = ceilings()
    if any(peaks.values()):
        print_table([{"instruction loop": k, "GOP/s": round(v, 1)} for k, v in peaks.items()],
                    title=f"this CPU's ceilings on {torch.get_num_threads()} threads (a multiply-add is 2 ops)")
    imadd = peaks.get("int16 multiply-add (vpmaddwd)")
    rows = []
    with torch.inference_mode():
        for out, inp, name in SHAPES:
            lin = torch.nn.Linear(inp, out, bias=False)
            packed = PackedLinear(lin)
            for m in (1, 8, 32, 256, 2048):
                if out * m > 49152 * 256:
                    continue  # the head at 2048 rows: 400 MB of logits, never asked for at once
                x = torch.randn(m, inp)
                flops = 2 * m * out * inp
                a, b = flops / best(lambda: F.linear(x, lin.weight)) / 1e9, flops / best(lambda: packed(x)) / 1e9
                rows.append({"weight": f"{name} [{out}x{inp}]", "rows": m, "default GFLOP/s": round(a, 1),
                             "oneDNN packed GFLOP/s": round(b, 1), "ratio": round(b / a, 2)})
    print_table(rows, title="fp32 linear: torch's default GEMM vs oneDNN with a pre-packed weight")

    rows = []
    reduction = torch.compile(lambda x, q, s: (x[:, None, :] * q.float()).sum(-1) * s)
    own = cpu_kernels.available()
    with torch.inference_mode():
        for out, inp, name in SHAPES:
            q = torch.randint(-127, 128, (out, inp), dtype=torch.int8)
            scale = torch.rand(out)
            for m in (1, 4, 32):
                x = torch.randn(m, inp)
                xb, sb = x.bfloat16(), scale.bfloat16()
                kernel = best(lambda: torch.ops.aten._weight_int8pack_mm(xb, q, sb))
                ours = best(lambda: cpu_kernels.int8_linear(xb, q, sb)) if own else None
                compiled = best(lambda: reduction(x, q, scale)) if m == 1 else None
                gbs = lambda t: round(q.numel() / t / 1e9, 2) if t else "-"
                gops = 2 * m * q.numel() / ours / 1e9 if ours else None
                rows.append({"weight": f"{name} [{out}x{inp}]", "rows": m, "torch kernel GB/s": gbs(kernel),
                             "lmlab kernel GB/s": gbs(ours), "compiled reduction GB/s": gbs(compiled),
                             "lmlab / torch": round(kernel / ours, 2) if ours else "-",
                             "lmlab GOP/s": round(gops, 1) if gops else "-",
                             "% of vpmaddwd ceiling": round(100 * gops / imadd) if gops and imadd else "-"})
    print_table(rows, title="decoded rows, int8 weight: torch's kernel, lmlab's, inductor's reduction")

    rows = []
    torch.backends.quantized.engine = "fbgemm"
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantised tensors are deprecated, the kernels not
        for out, inp, name in SHAPES:
            w = torch.randn(out, inp)
            scale = w.abs().amax(1) / 127
            q = (w / scale[:, None]).round().to(torch.int8)
            fb = torch.ops.quantized.linear_prepack(
                torch.quantize_per_channel(w, scale.double(), torch.zeros(out, dtype=torch.long), 0, torch.qint8), None)
            packed = PackedLinear(torch.nn.Linear(inp, out, bias=False))
            for m in (1, 8, 32):
                x, xq = torch.randn(m, inp), torch.randint(-127, 128, (m, inp), dtype=torch.int8)
                ops = 2 * m * out * inp / 1e9
                rows.append({"weight": f"{name} [{out}x{inp}]", "rows": m,
                             "torch int8 GEMM GOP/s": round(ops / best(lambda: torch._int_mm(xq, q.t())), 1),
                             "fbgemm dynamic GOP/s": round(ops / best(lambda: torch.ops.quantized.linear_dynamic(
                                 x, fb, True)), 1),
                             "fp32 oneDNN GFLOP/s": round(ops / best(lambda: packed(x)), 1)})
    print_table(rows, title="w8a8: torch's integer GEMM vs fbgemm's dynamic quantised linear vs fp32")


if __name__ == "__main__":
    import _results

    _results.run(main)
