"""The fastest weight format and compile setting for a workload on this CPU, as measured.

`lmlab generate`, `chat`, `serve`, `eval` and `bench` load with `weights="auto"` and
`compile=None` unless told otherwise; this module turns those into a format and a compile setting.
The table holds, per CPU kind, what `benchmarks/decode.py` measured fastest for each workload,
and the perplexity that format costs on the script's fixed English text (fp32 = 0). A workload:

- "one-stream": one answer at a time, short prompts (generate, chat);
- "many-streams": concurrent requests (serve, bench with several streams);
- "scoring": log-likelihoods of long prompts (eval): prefill-bound, and kept in fp32 so that
  scores stay item-by-item equal to lm-evaluation-harness's.

Compiling the decode step (`--compile`) is faster per token once built, but building it costs
minutes the first time and tens of seconds in every later process (inductor's cache on disk
makes it cheaper, not free), so the table leaves it to long runs that ask for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.cpu import WORKLOADS, features


@dataclass(frozen=True)
class Choice:
    weights: str
    compile: bool
    why: str  # one line: the measurement behind it


# CPU kind -> workload -> (weights, compile, why), from benchmarks/decode.py and the compile cost
# of `lmlab bench decode --compile` in a fresh process. Compiling is left off by default: it makes
# tokens 1.3-1.9x faster, but even with inductor's cache warm a new process spends 40-90 s
# rebuilding the compiled step (minutes when cold), more than a one-shot answer takes eagerly;
# a long-lived server or benchmark asks for it with --compile.
TABLE = {
    "avx512-vnni": {  # Intel Xeon with AVX-512/VNNI/AMX, AMD Zen 4
        "one-stream": ("int8", False, "int8 eager: about 3x fp32 eager for one stream, +0.6% perplexity"),
        "many-streams": ("int8", False, "int8 eager: +0.6% perplexity (w8a8, about 1.9x fp32 at 32 streams "
                                        "with VNNI, costs +3.4%: ask for it with --weights w8a8)"),
    },
    "avx2": {  # AMD Zen 1-3, Intel without AVX-512
        "one-stream": ("int8", False, "int8 eager: 2-3x fp32 eager for one stream, +0.6% perplexity"),
        "many-streams": ("int8", False, "int8 eager: as fast as fp32 at 32 streams in 40% of the memory, "
                                        "+0.6% perplexity"),
    },
}


def cpu_kind() -> str:
    return "avx512-vnni" if features.avx512() and features.has_vnni() else "avx2"


def choose(workload: str, device: str = "cpu", weights: str = "auto", compile: bool | None = None) -> Choice:
    """The format and compile setting to load with: what the caller asked for, and where it asked
    for "auto" / None, the table's choice for this CPU and workload (fp32 eager off the CPU)."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    import torch

    if torch.device(device).type != "cpu":
        pick = ("fp32", False, "not a CPU: the CPU table does not apply")
    elif workload == "scoring":
        pick = ("fp32", False, "scoring: fp32 keeps log-likelihoods equal to lm-eval's; prefill is GEMM-bound")
    else:
        pick = TABLE[cpu_kind()][workload]
    chosen_weights = pick[0] if weights == "auto" else weights
    # a compile setting measured for another format says nothing about the one asked for
    chosen_compile = (pick[1] if weights == "auto" else False) if compile is None else compile
    why = pick[2] if weights == "auto" else "as asked"
    return Choice(chosen_weights, chosen_compile, why)
