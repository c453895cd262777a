"""Prometheus text exposition for the server (no client library needed)."""

from __future__ import annotations

from collections import defaultdict


class Histogram:
    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

    def __init__(self):
        self.counts = [0] * len(self.BUCKETS)
        self.sum, self.n = 0.0, 0

    def observe(self, v: float) -> None:
        self.sum += v
        self.n += 1
        for i, b in enumerate(self.BUCKETS):
            if v <= b:
                self.counts[i] += 1

    def lines(self, name: str, help: str) -> list[str]:
        out = [f"# HELP {name} {help}", f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(self.BUCKETS, self.counts)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.sum}", f"{name}_count {self.n}"]
        return out


class Metrics:
    def __init__(self):
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.http = Histogram()
        self.ttft, self.itl, self.e2e = Histogram(), Histogram(), Histogram()
        self.prompt_tokens = self.generation_tokens = 0
        self.rejected = self.disconnects = 0

    def request(self, path: str, status: int, seconds: float) -> None:
        known = path if path in KNOWN_PATHS else "other"
        self.requests[(known, status)] += 1
        self.http.observe(seconds)

    def render(self, pending: int, running: int, waiting: int, steps: int, step_errors: int,
               kv_cache_bytes: int = 0) -> str:
        out = ["# HELP lmlab_requests_total HTTP requests by path and status", "# TYPE lmlab_requests_total counter"]
        out += [f'lmlab_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())]
        for name, help, v, kind in [
            ("lmlab_prompt_tokens_total", "prompt tokens admitted", self.prompt_tokens, "counter"),
            ("lmlab_generation_tokens_total", "tokens generated", self.generation_tokens, "counter"),
            ("lmlab_rejected_total", "requests refused with 503 (queue full, or waited too long to start)", self.rejected, "counter"),
            ("lmlab_client_disconnects_total", "requests aborted because the client left", self.disconnects, "counter"),
            ("lmlab_engine_steps_total", "engine steps", steps, "counter"),
            ("lmlab_engine_step_errors_total", "engine steps that raised", step_errors, "counter"),
            ("lmlab_queue_depth", "requests in flight (admitted, not finished)", pending, "gauge"),
            ("lmlab_running_sequences", "sequences in the engine's batch", running, "gauge"),
            ("lmlab_waiting_requests", "requests waiting for a batch slot", waiting, "gauge"),
            ("lmlab_kv_cache_bytes", "bytes the engine's KV cache holds", kv_cache_bytes, "gauge"),
        ]:
            out += [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name} {v}"]
        out += self.http.lines("lmlab_http_request_seconds", "HTTP request latency")
        out += self.ttft.lines("lmlab_time_to_first_token_seconds", "time to first token (streaming)")
        out += self.itl.lines("lmlab_inter_token_latency_seconds", "time between tokens (streaming)")
        out += self.e2e.lines("lmlab_request_seconds", "end-to-end generation latency")
        return "\n".join(out) + "\n"


KNOWN_PATHS = {"/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions",
               "/v1/embeddings", "/tokenize", "/detokenize", "/tokenizer_info", "/v1/tokenize",
               "/v1/detokenize", "/v1/tokenizer_info"}
