"""Load test: N concurrent streaming chat clients against `lmlab serve` and llama-cpp-python's server.

Each client loops for --duration seconds: send a streaming /v1/chat/completions request, read it to
`data: [DONE]`, repeat. Requests started before the deadline are read to the end (up to --grace s).

Reports per server: requests, failures (HTTP errors, exceptions), truncations (a stream that ends
without a finish_reason or without [DONE]), generated tokens/s (content chunks; both servers send one
per token), and p50/p99 time to first token and inter-token latency.

    .venv/bin/python benchmarks/serve_load.py                     # 64 clients, 60 s, both servers
    .venv/bin/python benchmarks/serve_load.py --clients 8 --duration 10 --servers lmlab

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


async def load(url: str, model: str, clients: int, duration: float, grace: float, max_tokens: int) -> dict:
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

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        _, pending = await asyncio.wait(tasks, timeout=duration + grace)
        for t in pending:  # requests still unfinished after the grace period
            t.cancel()
        stats["cut_at_deadline"] = len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - t0
    return {"clients": clients, "wall_s": round(wall, 1), "requests": stats["requests"],
            "failures": stats["failures"], "truncated": stats["truncated"],
            "cut_at_deadline": stats["cut_at_deadline"], "tokens": stats["tokens"],
            "tok_s": round(stats["tokens"] / wall, 1),
            "ttft_p50_s": _r(pct(stats["ttft"], 0.5)), "ttft_p99_s": _r(pct(stats["ttft"], 0.99)),
            "itl_p50_ms": _r(pct(stats["itl"], 0.5), 1000), "itl_p99_ms": _r(pct(stats["itl"], 0.99), 1000),
            "first_errors": stats["errors"][:3]}


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
    ap.add_argument("--max-concurrency", type=int, default=64, help="lmlab serve --max-concurrency")
    ap.add_argument("--url", default=None, help="measure an already running server instead (one kind only)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    results = {}
    for kind in [s.strip() for s in args.servers.split(",") if s.strip()]:
        if args.url:
            results[kind] = asyncio.run(load(args.url, "smollm2", args.clients, args.duration, args.grace,
                                             args.max_tokens))
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
            results[kind] = asyncio.run(load(url, model, args.clients, args.duration, args.grace, args.max_tokens))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    keys = ["clients", "wall_s", "requests", "failures", "truncated", "cut_at_deadline", "tokens", "tok_s",
            "ttft_p50_s", "ttft_p99_s", "itl_p50_ms", "itl_p99_ms", "error", "first_errors"]
    names = list(results)
    print(f"{'':18}" + "".join(f"{n:>22}" for n in names))
    for k in keys:
        if any(k in results[n] for n in names):
            print(f"{k:18}" + "".join(f"{str(results[n].get(k, '')):>22}"[:40] for n in names))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    bad = any(r.get("error") or r.get("failures") or r.get("truncated") for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
