"""Load test: N concurrent streaming chat clients against `lmlab serve` and llama-cpp-python's server.

Each client loops for --duration seconds: send a streaming /v1/chat/completions request, read it to
`data: [DONE]`, repeat. Requests started before the deadline are read to the end (up to --grace s).

Reports per server: requests, failures (HTTP errors, exceptions), truncations (a stream that ends
without a finish_reason or without [DONE]), generated tokens/s (content chunks; both servers send one
per token), and p50/p99 time to first token and inter-token latency.

    .venv/bin/python benchmarks/serve_load.py                     # 64 clients, 60 s, both servers
    .venv/bin/python benchmarks/serve_load.py --clients 8 --duration 10 --servers lmlab
    .venv/bin/python benchmarks/serve_load.py --servers lmlab --hostile --json results/serve_hostile.json

--hostile (lmlab only) adds a hostile client beside the normal ones, sending back to back
the sampling values float32 cannot carry (temperature 1e-300 and 1e-45, repetition_penalty
1e-300 and 1e30, logit_bias 1e39: 400 expected) and extreme ones it can (top_p 1e-45 and 1e-300,
temperature 100, repetition_penalty 0.01 and 100: 200 expected), and, side by side with those,
~8k-token prompts (streamed, 200 expected; every other one is dropped mid-prefill by disconnecting
after 1.5 s). The server runs with
--max-cache-tokens (default 32768 here); its RSS and KV-cache bytes are sampled through the run.
Reported besides the normal figures: each hostile case's status codes, how many were not the
expected one, the server's idle and peak RSS against the KV ceiling, and the queue depth once the
load is over (0: nothing left hanging). It passes with 0 failed or truncated normal streams and
no unexpected hostile status.

llama-cpp-python's server needs its extras: pip install sse-starlette starlette-context pydantic-settings
(it runs the bundled Q4_1 GGUF natively; lmlab serves the same file dequantized to fp32). llama_cpp.server
decodes one request at a time and by default interrupts a running stream when another arrives; this
script starts it with --interrupt_requests False so that concurrent clients queue instead
(--llama-interrupt keeps the default, which shows up as truncations).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402 - benchmarks/ is not a package

PROMPTS = ["Tell me a short story about a robot who learns to paint.",
           "Explain why the sky is blue in a few sentences.",
           "Give me three tips for writing clean Python code.",
           "What is the difference between a list and a tuple?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def one_request(http: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int, stats: dict):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True}
    t0 = time.perf_counter()
    last = None
    tokens, finish, done = 0, None, False
    try:
        async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                stats["failures"] += 1
                stats["errors"].append(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data.strip() == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                for c in chunk.get("choices", []):
                    if (c.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        if last is None:
                            stats["ttft"].append(now - t0)
                        else:
                            stats["itl"].append(now - last)
                        last = now
                        tokens += 1
                    finish = c.get("finish_reason") or finish
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        stats["failures"] += 1
        stats["errors"].append(f"{type(e).__name__}: {e}")
        return
    stats["requests"] += 1
    stats["tokens"] += tokens
    if not (done and finish):
        stats["truncated"] += 1


# (case, request body fields, expected status): what float32 cannot carry is refused, the rest served
HOSTILE_SAMPLING = [
    ("temperature=1e-300", {"temperature": 1e-300}, 400),
    ("temperature=1e-45", {"temperature": 1e-45}, 400),
    ("repetition_penalty=1e-300", {"repetition_penalty": 1e-300}, 400),
    ("repetition_penalty=1e30", {"repetition_penalty": 1e30}, 400),
    ("logit_bias=1e39", {"logit_bias": {"5": 1e39}}, 400),
    ("top_p=1e-45", {"top_p": 1e-45}, 200),
    ("top_p=1e-300", {"top_p": 1e-300}, 200),
    ("temperature=100", {"temperature": 100}, 200),
    ("repetition_penalty=0.01", {"repetition_penalty": 0.01}, 200),
    ("repetition_penalty=100", {"repetition_penalty": 100}, 200),
]


async def hostile_client(http: httpx.AsyncClient, url: str, model: str, deadline: float, long_tokens: int,
                         out: dict) -> None:
    """Until the deadline, two hostile streams of requests side by side: the sampling cases back to
    back, and long prompts back to back (every other one dropped while it is prefilled)."""
    import random

    def record(case: str, status, expected) -> None:
        row = out.setdefault(case, {"expected": expected, "statuses": {}})
        row["statuses"][str(status)] = row["statuses"].get(str(status), 0) + 1

    async def sampling() -> None:
        while time.perf_counter() < deadline:
            for case, values, expected in HOSTILE_SAMPLING:
                body = {"model": model, "messages": [{"role": "user", "content": "Say something."}],
                        "max_tokens": 8, **values}
                try:
                    status = (await http.post(url + "/v1/chat/completions", json=body)).status_code
                except httpx.HTTPError as e:
                    status = type(e).__name__
                record(case, status, expected)
                if time.perf_counter() >= deadline:
                    return

    async def long_prompts() -> None:
        rng, k = random.Random(0), 0
        while time.perf_counter() < deadline:
            # token ids outside the special range, as a client sending ids to /v1/completions would
            body = {"model": model, "prompt": [rng.randrange(200, 49000) for _ in range(long_tokens)],
                    "max_tokens": 16, "stream": True}
            drop, k = k % 2 == 1, k + 1
            case = f"prompt_{long_tokens}_tokens" + ("_dropped_mid_prefill" if drop else "")

            async def read() -> int:
                async with http.stream("POST", url + "/v1/completions", json=body) as r:
                    async for _ in r.aiter_lines():
                        pass
                    return r.status_code

            try:
                status = await asyncio.wait_for(read(), timeout=1.5 if drop else None)
            except asyncio.TimeoutError:
                status = "disconnected"
            except httpx.HTTPError as e:
                status = type(e).__name__
            record(case, status, "disconnected" if drop else 200)

    await asyncio.gather(sampling(), long_prompts())


async def sample_memory(url: str, pid: int | None, stop: asyncio.Event, out: dict) -> None:
    """Peak RSS of the server process and peak lmlab_kv_cache_bytes, sampled until `stop`."""
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            if pid is not None:
                out["rss_peak_mb"] = max(out.get("rss_peak_mb", 0), rss_mb(pid))
            try:
                kv = metric_value((await http.get(url + "/metrics")).text, "lmlab_kv_cache_bytes")
                out["kv_cache_peak_mb"] = max(out.get("kv_cache_peak_mb", 0), round(kv / 2**20, 1))
            except (httpx.HTTPError, KeyError):
                pass
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.25)
            except asyncio.TimeoutError:
                pass


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


async def load(url: str, model: str, clients: int, duration: float, grace: float, max_tokens: int,
               hostile: dict | None = None) -> dict:
    """`hostile`: {"pid", "long_tokens", "max_cache_tokens"} to add the hostile client and the memory sampler."""
    stats = {"requests": 0, "failures": 0, "truncated": 0, "tokens": 0, "ttft": [], "itl": [], "errors": [],
             "cut_at_deadline": 0}
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    timeout = httpx.Timeout(duration + grace, connect=30)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        async def client(i: int):
            k = 0
            while time.perf_counter() < deadline:
                await one_request(http, url, model, PROMPTS[(i + k) % len(PROMPTS)], max_tokens, stats)
                k += 1

        memory, cases, stop = {}, {}, asyncio.Event()
        if hostile is not None:
            memory["rss_idle_mb"] = rss_mb(hostile["pid"]) if hostile["pid"] else None
            # an idle engine holds one slot of min(256, ceiling) tokens: bytes per cached token, whatever the dtype
            idle = metric_value((await http.get(url + "/metrics")).text, "lmlab_kv_cache_bytes")
            memory["kv_bytes_per_token"] = round(idle / min(256, hostile["max_cache_tokens"]))
            if not memory["kv_bytes_per_token"]:  # the idle cache has shrunk to nothing: from the shapes
                from lmlab.model.io.hf import read_config
                from lmlab.model.io.resolve import resolve

                c = read_config(resolve("smollm2"))
                memory["kv_bytes_per_token"] = 2 * c.n_layers * c.n_kv_heads * c.head_dim * 4  # fp32 keys and values
            sampler = asyncio.create_task(sample_memory(url, hostile["pid"], stop, memory))
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        if hostile is not None:
            bad = asyncio.create_task(hostile_client(http, url, model, deadline, hostile["long_tokens"], cases))
        _, pending = await asyncio.wait(tasks, timeout=duration + grace)
        for t in pending:  # requests still unfinished after the grace period
            t.cancel()
        stats["cut_at_deadline"] = len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - t0
        if hostile is not None:
            try:
                await asyncio.wait_for(bad, timeout=grace)
            except asyncio.TimeoutError:
                cases["hostile client cut at the grace period"] = {"expected": None, "statuses": {"cut": 1}}
            # nothing left hanging: every request released once the clients are gone
            depth, t_end = None, time.perf_counter() + 30
            while time.perf_counter() < t_end:
                depth = metric_value((await http.get(url + "/metrics")).text, "lmlab_queue_depth")
                if depth == 0:
                    break
                await asyncio.sleep(0.2)
            stop.set()
            await sampler
    extra = {}
    if hostile is not None:
        unexpected = sum(n for c in cases.values() for st, n in c["statuses"].items() if st != str(c["expected"]))
        extra = {"hostile_cases": cases, "hostile_unexpected": unexpected, "queue_depth_after": depth, **memory}
    return {"clients": clients, "wall_s": round(wall, 1), "requests": stats["requests"],
            "failures": stats["failures"], "truncated": stats["truncated"],
            "cut_at_deadline": stats["cut_at_deadline"], "tokens": stats["tokens"],
            "tok_s": round(stats["tokens"] / wall, 1),
            "ttft_p50_s": _r(pct(stats["ttft"], 0.5)), "ttft_p99_s": _r(pct(stats["ttft"], 0.99)),
            "itl_p50_ms": _r(pct(stats["itl"], 0.5), 1000), "itl_p99_ms": _r(pct(stats["itl"], 0.99), 1000),
            "first_errors": stats["errors"][:3], **extra}


def _r(x, scale=1.0):
    return None if x is None else round(x * scale, 3)


def wait_healthy(proc, url: str, path: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout} s")


def start(kind: str, args, log) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if kind == "lmlab":
        cmd = [sys.executable, "-m", "lmlab.cli.main", "serve", "--port", str(port), "--served-model-name", "smollm2",
               "--max-concurrency", str(args.max_concurrency), "--max-queue", str(max(256, 2 * args.clients))]
        if args.max_cache_tokens:
            cmd += ["--max-cache-tokens", str(args.max_cache_tokens)]
        if args.prefill_chunk:
            cmd += ["--prefill-chunk", str(args.prefill_chunk)]
        if args.model:
            cmd += ["--model", args.model]
        probe, model = "/health", "smollm2"
    else:
        from lmlab.model.io.resolve import bundled_gguf
        gguf = args.gguf or str(bundled_gguf("smollm2"))
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--n_threads", str(args.threads),
               "--n_ctx", "4096", "--port", str(port), "--host", "127.0.0.1", "--model_alias", "smollm2",
               # its default (True) cuts a running stream short whenever a new request arrives
               "--interrupt_requests", str(args.llama_interrupt)]
        probe, model = "/v1/models", "smollm2"
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, url, probe)
    except Exception:
        proc.terminate()
        raise
    return proc, url, model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60, help="seconds during which clients start requests")
    ap.add_argument("--grace", type=float, default=180, help="extra seconds to finish requests already started")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--servers", default="lmlab,llama_cpp", help="comma list: lmlab, llama_cpp")
    ap.add_argument("--model", default=None, help="lmlab --model (default: the bundled smollm2)")
    ap.add_argument("--gguf", default=None, help="GGUF for llama_cpp.server (default: the bundled one)")
    ap.add_argument("--threads", type=int, default=2, help="llama_cpp.server --n_threads")
    ap.add_argument("--llama-interrupt", action="store_true",
                    help="keep llama_cpp.server's default interrupt_requests=True (truncates concurrent streams)")
    ap.add_argument("--max-concurrency", type=int, default=None,
                    help="lmlab serve --max-concurrency (default 64; with --hostile, room for its requests too)")
    ap.add_argument("--url", default=None, help="measure an already running server instead (one kind only)")
    ap.add_argument("--hostile", action="store_true", help="add the hostile client and the memory figures (lmlab)")
    ap.add_argument("--long-prompt-tokens", type=int, default=8000, help="the hostile client's long prompts")
    ap.add_argument("--max-cache-tokens", type=int, default=None,
                    help="lmlab serve --max-cache-tokens (default: none; 32768 with --hostile)")
    ap.add_argument("--prefill-chunk", type=int, default=None, help="lmlab serve --prefill-chunk (default: its own)")
    ap.add_argument("--pid", type=int, default=None, help="with --url: the server's pid, for its RSS")
    _results.add_json_flag(ap)
    args = ap.parse_args()
    if args.hostile:
        if args.servers.replace(" ", "") != "lmlab":
            ap.error("--hostile measures lmlab serve only: add --servers lmlab")
        args.max_cache_tokens = args.max_cache_tokens or 32768
    if args.max_concurrency is None:
        args.max_concurrency = max(64, args.clients + 8) if args.hostile else 64

    results = {}
    for kind in [s.strip() for s in args.servers.split(",") if s.strip()]:
        if args.url:
            hostile = ({"pid": args.pid, "long_tokens": args.long_prompt_tokens, "max_cache_tokens": args.max_cache_tokens}
                       if args.hostile else None)
            results[kind] = asyncio.run(load(args.url, "smollm2", args.clients, args.duration, args.grace,
                                             args.max_tokens, hostile))
            continue
        log = tempfile.NamedTemporaryFile("w+", prefix=f"serve_load_{kind}_", suffix=".log", delete=False)
        print(f"[{kind}] starting server (log: {log.name})", file=sys.stderr, flush=True)
        try:
            proc, url, model = start(kind, args, log)
        except Exception as e:  # noqa: BLE001 - report and go on with the other server
            results[kind] = {"error": f"{e} (see {log.name})"}
            continue
        try:
            print(f"[{kind}] {args.clients} clients for {args.duration:.0f} s", file=sys.stderr, flush=True)
            hostile = ({"pid": proc.pid, "long_tokens": args.long_prompt_tokens, "max_cache_tokens": args.max_cache_tokens}
                       if args.hostile else None)
            results[kind] = asyncio.run(load(url, model, args.clients, args.duration, args.grace, args.max_tokens,
                                             hostile))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    from lmlab.report.table import print_table

    keys = ["clients", "wall_s", "requests", "failures", "truncated", "cut_at_deadline", "tokens", "tok_s",
            "ttft_p50_s", "ttft_p99_s", "itl_p50_ms", "itl_p99_ms", "error", "first_errors"]
    if args.hostile:
        keys += ["hostile_unexpected", "queue_depth_after", "rss_idle_mb", "rss_peak_mb", "kv_cache_peak_mb"]
    names = list(results)
    rows = [{"": k, **{n: results[n].get(k, "") for n in names}} for k in keys if any(k in results[n] for n in names)]
    if args.hostile:
        rows.append({"": "kv_ceiling_mb", **{n: round(args.max_cache_tokens * results[n].get("kv_bytes_per_token", 0)
                                                      / 2**20, 1) for n in names}})
    print_table(rows, title=f"{args.clients} streaming clients, {args.duration:g} s"
                + (f", a hostile client, --max-cache-tokens {args.max_cache_tokens}" if args.hostile else ""))
    for n in names:
        if results[n].get("hostile_cases"):
            print_table([{"case": c, "expected": v["expected"], "statuses": v["statuses"]}
                         for c, v in results[n]["hostile_cases"].items()], title=f"[{n}] hostile requests")
    _results.write_json(args.json, {"results": results, "max_cache_tokens": args.max_cache_tokens})
    bad = any(r.get("error") or r.get("failures") or r.get("truncated") or r.get("hostile_unexpected")
              or r.get("queue_depth_after") for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
