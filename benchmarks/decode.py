"""Decoding speed, time to first token, peak memory and quality cost, side by side.

On the bundled model (SmolLM2-135M-Instruct), a 40-token chat prompt, greedy, EOS ignored:

* lmlab in each weight format (fp32, bf16, int8, w8a8, int4) for 1, 8 and 32 concurrent streams
  (`lmlab.engine.bench.bench_decode`: tok/s = all generated tokens / wall time, prefill included);
* the same with the decode step compiled (`lmlab+compile`, `lmlab.load(..., compile=True)`) for 1
  and 32 streams; the one-off compilation happens in the untimed warm-up and is reported as
  `warmup_s` (torch.compile also caches its work on disk, so a second process compiles faster);
  The streams share one prompt, which the engine prefills once; a row per format also times as
  many streams on distinct prompts (`NNd`: the same chat template, a different user turn each);
* transformers `AutoModelForCausalLM.from_pretrained(folder, dtype=float32).generate` for a batch
  of 1, 8 and 32 identical prompts (tok/s = batch * new tokens / seconds, prefill included);
* llama.cpp (`llama_cpp.Llama`, the bundled Q4_1 GGUF itself, `--threads`, default 2) for 1 stream
  (tok/s of the decode phase: tokens after the first / time after the first);
* time to first token for a 1,000-token prompt: lmlab (each format) vs llama.cpp;
* perplexity of a fixed English text under each lmlab format (one forward pass);
* what memory allows for one stream: each decoded token reads every weight once, so this
  machine's read bandwidth (a streaming read over 512 MB) divided by the bytes of weights per
  token bounds the tok/s of each format, and of llama.cpp (its GGUF file); the table sets each
  system's measured 1-stream rate against its own bound.

Every configuration runs in its own fresh process (the script re-invokes itself with
`--one SYSTEM:WEIGHTS:WHAT`), so its peak RSS is its own. A peer that is not importable is
skipped with a note.

    python benchmarks/decode.py [--quick] [--new-tokens 128] [--threads 2] [--json results.json]
                                [--formats fp32,int8] [--streams 1,32] [--no-compile] [--repeats 3]

Each speed row times `--repeats` runs (default 3) in its process, after one warm-up, and reports
the median run (lmlab and llama.cpp by decode-phase rate, transformers by tok/s); the JSON keeps
every run's rate.

`--threads` sets the CPU threads of every system alike (torch's and llama.cpp's; default 2). On a
machine that other jobs keep busy, 2 threads can be several times slower than 1: both systems'
threads spin-wait for each other at every parallel region, and a descheduled one stalls the rest.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import time

FORMATS = ("auto", "fp32", "bf16", "int8", "w8a8", "int4")  # auto: the default path (no format flags)
STREAMS = (1, 8, 32)
PROMPT_TOKENS = 40
LONG_PROMPT_TOKENS = 1000
GGUF_WEIGHTS = "Q4_1"  # the bundled file's own format
THREADS = 2  # CPU threads of every system (--threads)
REPEATS = 3  # timed runs per configuration, the median one reported (--repeats)

# Neutral expository prose for the perplexity measurement (~250 words, written for this script).
PPL_TEXT = """\
Rivers shape the land they cross in ways that are slow to see but easy to measure. Water that \
falls as rain or melts from snow gathers in small channels, and these channels join to form \
streams and then rivers. As the water moves downhill, it carries sand, silt and small stones. \
The faster the current, the larger the pieces it can lift. Where a river leaves the mountains \
and enters a wide plain, its speed drops, and much of this material settles on the bed and \
along the banks.

Over many years, the settled material builds fertile soil. This is one reason why early farming \
communities often grew up beside rivers. The water could be led into fields through simple \
ditches, and the yearly floods renewed the ground with fresh silt. Towns followed the farms, \
and rivers became routes for trade, because boats could move heavy goods more cheaply than \
carts on rough roads.

A river does not keep the same course forever. On flat ground it tends to bend, and each bend \
grows as the current cuts into the outer bank and leaves sediment on the inner one. In time, \
two bends may meet, and the river takes the shorter path, leaving behind a curved lake. Near \
the sea, a river may split into many smaller channels and form a delta, a broad area of wet \
land that is rich in plants and birds.

People have changed many rivers with dams, canals and walls. These works can supply power, \
store water and reduce floods, but they also alter the flow of sediment and the lives of the \
animals that depend on it. Engineers and scientists therefore study rivers closely before \
they decide how to manage them.
"""


# ---- one configuration, in a child process ------------------------------------------------------

def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median_run(runs: list[dict], key: str) -> dict:
    """The run with the median `key` (the lower middle for an even count), every run's value kept
    under `key`_runs: on a shared machine one short run can land in a slow or a fast moment."""
    runs = sorted(runs, key=lambda r: r.get(key) or 0.0)
    mid = dict(runs[(len(runs) - 1) // 2])
    mid[f"{key}_runs"] = [round(r.get(key) or 0.0, 2) for r in runs]
    return mid


def run_lmlab(weights: str, what: str, new_tokens: int, compile: bool = False) -> dict:
    import lmlab
    from lmlab.engine.bench import bench_decode

    if weights == "auto":  # what `lmlab.load()` / the CLI do with no flags, for this workload
        workload = "one-stream" if what in ("1", "ppl") or what.startswith("ttft") else "many-streams"
        lm = lmlab.load("smollm2", workload=workload)
    else:
        lm = lmlab.load("smollm2", weights=weights, compile=compile)
    resolved = {"resolved": f"{lm.weights}{' compiled' if lm.compile else ''}"}
    if what == "ppl":
        return {"perplexity": perplexity(lm), "peak_rss_mb": _rss_mb(), **resolved}
    if what.startswith("ttft"):
        r = bench_decode(lm, streams=1, prompt_tokens=int(what[4:]), new_tokens=1)
        return {"ttft_s": r["ttft_s"], "peak_rss_mb": r["peak_rss_mb"], "prompt_tokens": r["prompt_tokens"], **resolved}
    distinct = what.endswith("d")  # "32d": 32 streams, each on its own prompt
    runs = [bench_decode(lm, streams=int(what.rstrip("d")), prompt_tokens=PROMPT_TOKENS, new_tokens=new_tokens,
                         warmup=i == 0, distinct=distinct) for i in range(REPEATS)]  # the first run's warm-up compiles; later runs reuse it
    r = median_run(runs, "decode_tok_s")
    r["warmup_s"] = runs[0]["warmup_s"] if len(runs) == 1 else max(x["warmup_s"] for x in runs)
    return {**{k: r[k] for k in ("tok_s", "decode_tok_s", "decode_tok_s_runs", "ttft_s", "peak_rss_mb", "seconds",
                                 "warmup_s")}, **resolved}


def perplexity(lm) -> dict:
    import torch

    ids = lm.tokenizer.encode(PPL_TEXT)
    with torch.inference_mode():
        logits = lm.model(torch.tensor([ids]))[0].float()
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="mean").item()
    return {"tokens": len(ids), "predicted": len(ids) - 1, "nll": nll, "ppl": math.exp(nll)}


def run_transformers(batch: int, prompt: list[int], new_tokens: int) -> dict:
    import torch
    import transformers
    from transformers.generation.streamers import BaseStreamer

    from lmlab.model.io.resolve import resolve

    folder = resolve("smollm2")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([prompt] * batch)
    mask = torch.ones_like(ids)
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else model.generation_config.eos_token_id

    def gen(n: int, streamer=None):
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=pad, streamer=streamer)

    class FirstToken(BaseStreamer):  # put() gets the prompt first, then each new token
        def __init__(self):
            self.calls, self.first = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and self.first is None:
                self.first = time.perf_counter()

        def end(self):
            pass

    gen(4)  # warm-up
    runs = []
    for _ in range(REPEATS):
        streamer = FirstToken() if batch == 1 else None  # transformers streams batch 1 only
        t0 = time.perf_counter()
        out = gen(new_tokens, streamer)
        seconds = time.perf_counter() - t0
        generated = (out.shape[1] - ids.shape[1]) * batch
        runs.append({"tok_s": generated / seconds, "seconds": seconds, "peak_rss_mb": _rss_mb(),
                     "ttft_s": (streamer.first - t0) if streamer and streamer.first else None})
    return median_run(runs, "tok_s")


def run_llama_cpp(what: str, prompt: list[int], new_tokens: int) -> dict:
    import llama_cpp

    from lmlab.model.io.resolve import bundled_gguf

    llm = llama_cpp.Llama(model_path=str(bundled_gguf("smollm2")), n_threads=THREADS, n_threads_batch=THREADS,
                          n_ctx=2048, verbose=False)
    greedy = dict(temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)

    def once(n: int) -> tuple[float, float, int]:
        """(t_first, t_last, tokens) for n tokens from a fresh context (no prefix reuse)."""
        llm.reset()
        t0 = time.perf_counter()
        first = last = t0
        count = 0
        for _ in llm.generate(prompt, reset=True, **greedy):  # stops on our count, not on EOS
            count += 1
            last = time.perf_counter()
            if count == 1:
                first = last
            if count >= n:
                break
        return first - t0, last - t0, count

    once(4)  # warm-up
    if what.startswith("ttft"):
        ttft, _, _ = once(1)
        return {"ttft_s": ttft, "peak_rss_mb": _rss_mb(), "prompt_tokens": len(prompt)}
    runs = []
    for _ in range(REPEATS):
        ttft, total, count = once(new_tokens)
        # tok_s is the decode phase (llama.cpp's own report); the ratios use tok_s_end_to_end where
        # lmlab's figure includes the prefill
        runs.append({"tok_s": (count - 1) / (total - ttft) if count > 1 else None,
                     "tok_s_end_to_end": count / total, "ttft_s": ttft, "seconds": total,
                     "peak_rss_mb": _rss_mb()})
    return median_run(runs, "tok_s")


def _decode_rate(system: str, r: dict):
    if system == "llama.cpp":
        return r.get("tok_s") or "error"
    return r.get("decode_tok_s") or "-"


def run_one(spec: str, new_tokens: int) -> dict:
    before, mine0 = _cpu_times(), _own_cpu_s()
    r = _run_one(spec, new_tokens)
    after, mine1 = _cpu_times(), _own_cpu_s()
    if before and after:  # other processes on the 2 shared cores skew every figure: keep a trace
        d = [b - a for a, b in zip(before, after)]
        total = sum(d[:8])  # user nice system idle iowait irq softirq steal
        mine = (mine1 - mine0) * os.sysconf("SC_CLK_TCK")
        r["other_cpu_pct"] = round(max(0.0, 100 * (total - d[3] - d[4] - mine) / max(1, total)), 1)
    return r


def _own_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _cpu_times() -> list[int] | None:
    """The machine's CPU time counters, in clock ticks (user nice system idle iowait irq softirq steal ...)."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def _run_one(spec: str, new_tokens: int) -> dict:
    system, weights, what = spec.split(":")
    if system in ("lmlab", "lmlab+compile"):
        return run_lmlab(weights, what, new_tokens, compile=system == "lmlab+compile")
    payload = json.loads(sys.stdin.read())  # prompt ids from the parent: no tokenizer/torch here
    if system == "transformers":
        return run_transformers(int(what), payload["prompt"], new_tokens)
    if system == "llama.cpp":
        return run_llama_cpp(what, payload["prompt"], new_tokens)
    raise SystemExit(f"unknown system {system!r}")


# ---- the parent: plan, run each configuration in a fresh process, report --------------------------

def child(spec: str, new_tokens: int, stdin: str = "") -> dict:
    cmd = [sys.executable, __file__, "--one", spec, "--new-tokens", str(new_tokens), "--threads", str(THREADS),
           "--repeats", str(REPEATS)]
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-8:])
        return {"error": f"exit {p.returncode}: {tail}"}
    return json.loads(lines[-1])


# Bytes one decoded token reads per weight of the linear layers and the output layer (the
# embedding lookup reads a single row). int4: 4 bits plus a bf16 scale and zero per 32 weights.
BYTES_PER_WEIGHT = {"fp32": 4, "bf16": 2, "int8": 1, "w8a8": 1, "int4": 0.625}


def read_bandwidth() -> float:
    """GB/s of a plain streaming read (torch's sum over 512 MB) with THREADS threads."""
    import torch

    torch.set_num_threads(THREADS)
    x = torch.ones(2 ** 27)
    times = []
    for _ in range(6):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    return x.numel() * 4 / min(times[1:]) / 1e9


def memory_bounds(results: dict[str, dict], folder, gguf, bandwidth: float) -> list[dict]:
    """Per system: MB of weights per decoded token, the tok/s that bandwidth allows, and the
    measured 1-stream decode-phase rate (lmlab: the better of eager and compiled) as a share of it."""
    import torch

    from lmlab.model.config import ModelConfig
    from lmlab.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(ModelConfig.from_hf(json.loads((folder / "config.json").read_text())))
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    rows = []
    for fmt, per_weight in BYTES_PER_WEIGHT.items():
        rates = [r.get("decode_tok_s") or r["tok_s"] for spec, r in results.items()
                 if spec in (f"lmlab:{fmt}:1", f"lmlab+compile:{fmt}:1") and r.get("tok_s")]
        if rates:
            rows.append(("lmlab", fmt, weights * per_weight, max(rates)))
    if (results.get("llama.cpp:Q4_1:1") or {}).get("tok_s"):
        rows.append(("llama.cpp", "Q4_1", gguf.stat().st_size, results["llama.cpp:Q4_1:1"]["tok_s"]))
    return [{"system": system, "weights": fmt, "MB read per token": round(nbytes / 1e6, 1),
             "bound tok/s": round(bandwidth * 1e9 / nbytes, 1), "measured tok/s": round(rate, 1),
             "% of bound": round(100 * rate * nbytes / (bandwidth * 1e9))} for system, fmt, nbytes, rate in rows]


def plan(quick: bool, peers: dict[str, bool], formats=None, streams=None, compile: bool = True) -> list[str]:
    formats = formats or (("auto", "fp32", "int8") if quick else FORMATS)
    streams = streams or ((1, 8) if quick else STREAMS)
    specs = [f"lmlab:{w}:{s}" for w in formats for s in streams]
    if compile:  # auto decides compiling for itself
        specs += [f"lmlab+compile:{w}:{s}" for w in formats if w != "auto" for s in sorted({1, streams[-1]})]
    if streams[-1] > 1:  # the engine prefills identical prompts once: also time distinct ones
        specs += [f"lmlab{'+compile' if compile and w != 'auto' else ''}:{w}:{streams[-1]}d" for w in formats]
    if peers["transformers"]:
        specs += [f"transformers:fp32:{s}" for s in streams]
    if peers["llama.cpp"]:
        specs += [f"llama.cpp:{GGUF_WEIGHTS}:1"]
    specs += [f"lmlab:{w}:ttft{LONG_PROMPT_TOKENS}" for w in formats]
    if peers["llama.cpp"]:
        specs += [f"llama.cpp:{GGUF_WEIGHTS}:ttft{LONG_PROMPT_TOKENS}"]
    specs += [f"lmlab:{w}:ppl" for w in formats]
    return specs


def ratios(results: dict[str, dict], streams_max: int) -> list[dict]:
    def val(spec, key):
        r = results.get(spec) or {}
        return r.get(key)

    def best(prefix_what: str, key: str, pick=max):
        cands = [(v, spec.split(":")[1] + (" compiled" if spec.startswith("lmlab+compile") else ""))
                 for spec, r in results.items()
                 if spec.startswith("lmlab") and spec.endswith(":" + prefix_what)
                 and (v := r.get(key)) is not None]
        return pick(cands) if cands else (None, None)

    one_best, one_fmt = best("1", "tok_s")
    one_decode, one_decode_fmt = best("1", "decode_tok_s")
    many_best, many_fmt = best(str(streams_max), "tok_s")
    distinct_best, distinct_fmt = best(f"{streams_max}d", "tok_s")
    many_decode, many_decode_fmt = best(str(streams_max), "decode_tok_s")
    ttft_best, ttft_fmt = best(f"ttft{LONG_PROMPT_TOKENS}", "ttft_s", min)
    llama = val(f"llama.cpp:{GGUF_WEIGHTS}:1", "tok_s")
    llama_e2e = val(f"llama.cpp:{GGUF_WEIGHTS}:1", "tok_s_end_to_end")
    llama_ttft = val(f"llama.cpp:{GGUF_WEIGHTS}:ttft{LONG_PROMPT_TOKENS}", "ttft_s")
    hf = val("transformers:fp32:1", "tok_s")
    auto_one, auto_many = val("lmlab:auto:1", "decode_tok_s"), val(f"lmlab:auto:{streams_max}", "decode_tok_s")
    auto_one_fmt = val("lmlab:auto:1", "resolved")
    auto_many_fmt = val(f"lmlab:auto:{streams_max}", "resolved")

    def row(what, num, den, goal, ok, detail):
        r = num / den if num is not None and den else None
        return {"ratio": what, "value": r if r is not None else "n/a", "goal": goal,
                "met": ("yes" if ok(r) else "no") if r is not None else "n/a", "lmlab weights": detail or ""}

    return [
        row("default path (no flags), 1 stream, decode phase: lmlab / llama.cpp (tok/s)", auto_one, llama,
            ">= 1.2", lambda r: r >= 1.2, auto_one_fmt),
        row(f"default path (no flags), {streams_max} streams, decode phase: lmlab / llama.cpp 1 stream (tok/s)",
            auto_many, llama, ">= 3", lambda r: r >= 3, auto_many_fmt),
        row("1 stream, decode phase: lmlab best / llama.cpp (tok/s)", one_decode, llama, ">= 1.0",
            lambda r: r >= 1.0, one_decode_fmt),
        row("1 stream, prefill included: lmlab best / llama.cpp (tok/s)", one_best, llama_e2e, ">= 1.0",
            lambda r: r >= 1.0, one_fmt),
        row("1 stream: lmlab best / transformers fp32 (tok/s)", one_best, hf, ">= 5",
            lambda r: r >= 5, one_fmt),
        # each rate against llama.cpp's rate of the same definition, as for 1 stream
        row(f"{streams_max} streams, decode phase: lmlab aggregate / llama.cpp 1 stream (tok/s)", many_decode,
            llama, ">= 3", lambda r: r >= 3, many_decode_fmt),
        row(f"{streams_max} streams, prefill included: lmlab aggregate / llama.cpp 1 stream (tok/s)", many_best,
            llama_e2e, ">= 3", lambda r: r >= 3, many_fmt),
        row(f"{streams_max} distinct prompts, prefill included: lmlab aggregate / llama.cpp 1 stream (tok/s)",
            distinct_best, llama_e2e, ">= 3", lambda r: r >= 3, distinct_fmt),
        row(f"TTFT {LONG_PROMPT_TOKENS}-token prompt: lmlab best / llama.cpp", ttft_best, llama_ttft, "<= 1.0",
            lambda r: r <= 1.0, ttft_fmt),
    ]


def main() -> None:
    global THREADS, REPEATS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: fp32+int8, streams 1 and 8, 32 new tokens")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per stream (default 128; 32 with --quick)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every system (default 2)")
    ap.add_argument("--json", metavar="PATH", help="also save all results as JSON")
    ap.add_argument("--formats", help=f"comma-separated lmlab weight formats (default {','.join(FORMATS)})")
    ap.add_argument("--streams", help=f"comma-separated stream counts (default {','.join(map(str, STREAMS))})")
    ap.add_argument("--no-compile", action="store_true", help="skip the lmlab+compile rows (minutes of compiling)")
    ap.add_argument("--repeats", type=int, default=REPEATS,
                    help=f"timed runs per speed row, in the same process; the median is reported (default {REPEATS})")
    ap.add_argument("--one", metavar="SPEC", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    THREADS, REPEATS = args.threads, max(1, args.repeats)

    if args.one:
        if not args.one.startswith("llama.cpp"):
            import torch
            torch.set_num_threads(THREADS)
        print(json.dumps(run_one(args.one, new_tokens)), flush=True)
        return

    os.environ.setdefault("COLUMNS", "160")  # rich: keep rows on one line when piped to a file
    from lmlab.engine.bench import synthetic_prompt
    from lmlab.model.io.resolve import bundled_gguf, resolve
    from lmlab.report.table import print_table
    from lmlab.tokenizer import Tokenizer

    folder = resolve("smollm2")  # converts once if the cache is cold; not timed
    tokenizer = Tokenizer.from_folder(folder)
    prompts = {"short": synthetic_prompt(tokenizer, PROMPT_TOKENS),
               "long": synthetic_prompt(tokenizer, LONG_PROMPT_TOKENS)}
    notes = []
    peers = {"transformers": importlib.util.find_spec("transformers") is not None,
             "llama.cpp": importlib.util.find_spec("llama_cpp") is not None}
    if peers["llama.cpp"]:
        try:
            bundled_gguf("smollm2")
        except Exception as e:
            peers["llama.cpp"] = False
            notes.append(f"llama.cpp skipped: {e}")
    for name, ok in peers.items():
        if not ok and not any(n.startswith(name) for n in notes):
            notes.append(f"{name} skipped: not importable in this environment")

    formats = tuple(args.formats.split(",")) if args.formats else None
    if formats and set(formats) - set(FORMATS):
        ap.error(f"unknown format(s) {', '.join(sorted(set(formats) - set(FORMATS)))}; choose from {', '.join(FORMATS)}")
    streams = tuple(sorted(int(x) for x in args.streams.split(","))) if args.streams else None
    specs = plan(args.quick, peers, formats, streams, not args.no_compile)
    results: dict[str, dict] = {}
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec} ...", end="", file=sys.stderr, flush=True)
        t = time.perf_counter()
        payload = ""
        if not spec.startswith("lmlab"):
            payload = json.dumps({"prompt": prompts["long" if spec.endswith(f"ttft{LONG_PROMPT_TOKENS}") else "short"]})
        results[spec] = r = child(spec, new_tokens, payload)
        status = "FAILED" if "error" in r else "ok"
        print(f" {status} ({time.perf_counter() - t:.1f} s)", file=sys.stderr, flush=True)
        if "error" in r:
            notes.append(f"{spec} failed: {r['error']}")

    # table 1: speed and memory
    rows = []
    for spec, r in results.items():
        system, weights, what = spec.split(":")
        if what == "ppl":
            continue
        ttft_only = what.startswith("ttft")
        rows.append({"system": system, "weights": f"auto = {r['resolved']}" if weights == "auto" and r.get("resolved")
                     else weights,
                     "streams": f"1 ({what[4:]}-tok prompt)" if ttft_only
                     else f"{what[:-1]} (distinct prompts)" if what.endswith("d") else what,
                     "tok/s": "-" if ttft_only else (r.get("tok_s_end_to_end" if system == "llama.cpp" else "tok_s")
                                                     or "error"),
                     "decode tok/s": "-" if ttft_only else _decode_rate(system, r),
                     "ttft_s": r.get("ttft_s") if r.get("ttft_s") is not None else "-",
                     "warmup_s": r.get("warmup_s") if r.get("warmup_s") is not None else "-",
                     "peak_rss_mb": r.get("peak_rss_mb", "error"),
                     "other_cpu_%": r.get("other_cpu_pct", "")})
    print_table(rows, title=f"decode: bundled SmolLM2-135M-Instruct, {PROMPT_TOKENS}-token chat prompt, "
                            f"{new_tokens} new tokens/stream, greedy, EOS ignored; {THREADS} threads; "
                            f"one process per row, the median of {REPEATS} timed runs")
    print("tok/s: all generated tokens / wall time, prefill included (llama.cpp: tokens / time from the request).\n"
          "decode tok/s: the decode phase alone, tokens after the first / time after the first (lmlab: after "
          "the last stream's first; transformers: not measured).\n"
          "ttft_s: mean time to first token over the streams (transformers: batch 1 only).\n"
          "warmup_s: lmlab's untimed warm-up of 4 tokens per stream (with the compile time in lmlab+compile rows).\n"
          f"other_cpu_%: share of the machine's {os.cpu_count()} CPUs used by other processes (and the "
          "hypervisor) while the row ran; high values mean contention.")

    # table 2: ratios against the goals
    streams_max = max(streams or ((1, 8) if args.quick else STREAMS))
    ratio_rows = ratios(results, streams_max)
    print_table(ratio_rows, title="ratios against the goals")

    # table 3: perplexity
    ppl_rows = []
    base = (results.get("lmlab:fp32:ppl") or {}).get("perplexity", {}).get("ppl")
    for spec, r in results.items():
        if spec.endswith(":ppl"):
            p = r.get("perplexity") or {}
            ppl = p.get("ppl")
            ppl_rows.append({"weights": spec.split(":")[1], "tokens scored": p.get("predicted", "error"),
                             "mean NLL": p.get("nll", "error"), "perplexity": ppl if ppl else "error",
                             "vs fp32 %": f"{100 * (ppl / base - 1):+.2f}" if ppl and base else "n/a"})
    print_table(ppl_rows, title="quality cost: perplexity of a fixed ~250-word English text (one forward pass)")

    # table 4: the memory bound for one stream
    bandwidth = read_bandwidth()
    bound_rows = memory_bounds(results, folder, bundled_gguf("smollm2") if peers["llama.cpp"] else None, bandwidth)
    if bound_rows:
        print_table(bound_rows, title=f"one stream against memory: this machine reads {bandwidth:.1f} GB/s "
                                      f"({THREADS} threads, streaming read of 512 MB)")
        print("MB read per token: weights only (KV cache and activations excluded), so the bound is an upper one.")

    busy = {spec: r["other_cpu_pct"] for spec, r in results.items() if r.get("other_cpu_pct") is not None}
    if any(v > 10 for v in busy.values()):
        notes.append("other processes used more than 10% of the machine's CPU during: "
                     + ", ".join(f"{k} ({v:.0f}%)" for k, v in busy.items() if v > 10)
                     + "; those rows understate speed")
    for n in notes:
        print(f"note: {n}")
    if args.json:  # the printed tables (for RESULTS.md) and every row's raw figures
        import _results

        _results.write_json(args.json, {"new_tokens": new_tokens, "prompt_tokens": PROMPT_TOKENS,
                                        "long_prompt_tokens": LONG_PROMPT_TOKENS, "quick": args.quick,
                                        "results": results, "read_bandwidth_gb_s": bandwidth, "notes": notes})


if __name__ == "__main__":
    main()
