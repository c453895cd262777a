"""Where one decode step's time goes: a torch.profiler table for the engine's decode step.

    python benchmarks/profile_decode.py [--weights int4] [--streams 1] [--steps 20] [--threads 1] [--compile]

With --compile the step is torch.compile'd (compiled in the unprofiled warm-up) and inductor's own
kernels appear in the table by name, next to dynamo's cache lookup and the graph's wrapper.
"""

from __future__ import annotations

import argparse

import torch

import lmlab
from lmlab.engine.bench import synthetic_prompt
from lmlab.engine.params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="int4")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 gives steadier tables on a machine other jobs keep busy)")
    ap.add_argument("--compile", action="store_true", help="profile the compiled decode step")
    args = ap.parse_args()
    if args.compile:
        torch._inductor.config.cpp.enable_kernel_profile = True
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = lmlab.load(weights=args.weights, compile=args.compile)
    engine = lm.engine
    prompt = synthetic_prompt(lm.tokenizer, 40)
    for _ in range(args.streams):
        engine.add_request(prompt, SamplingParams(max_tokens=args.steps + 8, temperature=0, ignore_eos=True))
    for _ in range(4):  # prefill and warm-up steps, not profiled
        engine.step()
    with torch.profiler.profile() as prof:
        for _ in range(args.steps):
            engine.step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    total_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1000 / args.steps
    print(f"{args.weights}{' compiled' if args.compile else ''}, {args.streams} stream(s): {total_ms:.1f} ms of operator time per decode step")
    print(table)


if __name__ == "__main__":
    import _results

    _results.run(main)
