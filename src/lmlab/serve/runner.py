"""Runners: what the app talks to instead of an engine.

A runner has `tokenizer` and `config` (the served model's), `start()`, `stop()`, `alive()`,
`add(prompt_ids, params, stream) -> (request_id, asyncio.Queue)`, `abort(request_id)` and
`await embed(list_of_ids) -> vectors`, plus the gauges `running`, `waiting`, `steps` and
`step_errors` for /metrics. The queue receives ("delta", Delta) items (only when `stream`), then
("done", RequestOutput) or ("error", Exception); an LmlabError means a bad request (400).
`EngineRunner` (here) drives lmlab's Engine; `vllm_runner.VllmRunner` drives vLLM's.
An `Overloaded` error item means the request waited `max_wait` seconds without starting (503).

EngineRunner: one thread owns the Engine. The engine is not thread-safe, so everything that
touches it (add_request, abort, embeddings forward passes) goes through `inbox`, a thread-safe
queue the loop drains before each step; results reach each request's asyncio.Queue on the
server's event loop via call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future

import torch

from lmlab.errors import LmlabError

log = logging.getLogger("lmlab.serve")


class Overloaded(Exception):
    """A request that waited its runner's `max_wait` seconds without starting: every batch slot,
    or the KV-cache ceiling, stayed taken. Answered 503 with Retry-After: a retry may fit."""


class EngineRunner:
    def __init__(self, lm, max_batch: int = 32, admit_per_step: int = 4, max_cache_tokens: int | None = None,
                 prefill_chunk: int = 512, max_wait: float | None = None):
        """max_wait: seconds a request may wait to start (in this runner's queue or the engine's,
        for a batch slot or room under `max_cache_tokens`) before it is dropped with Overloaded;
        None waits as long as it takes."""
        self.lm, self.tokenizer, self.config = lm, lm.tokenizer, lm.config
        # New requests enter the engine at most `admit_per_step` per step (each costs a prefill in
        # that step), so a burst of arrivals does not stall every running stream for one long step.
        self.admit_per_step = admit_per_step
        self._held: "collections.deque" = collections.deque()
        self.max_batch = max_batch
        self.engine = lm.engine  # from now on touched only by this runner's thread
        self.engine.max_batch = max_batch
        if prefill_chunk < 1:
            raise LmlabError(f"prefill_chunk = {prefill_chunk}: must be at least 1 token")
        if max_wait is not None and not max_wait > 0:
            raise LmlabError(f"max_wait = {max_wait}: must be > 0 seconds")
        self.max_wait = max_wait
        self._arrived: dict[str, float] = {}  # request id -> when it reached this thread, until it ends
        self.engine_options = {"max_cache_tokens": max_cache_tokens, "prefill_chunk": prefill_chunk}
        for k, v in self.engine_options.items():
            setattr(self.engine, k, v)
        self.inbox: queue.Queue = queue.Queue()
        self._sinks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="lmlab-engine", daemon=True)
        self.steps = 0
        self.step_errors = 0
        self.running = 0  # sequences in the engine's batch after the last step (for /metrics)
        self.waiting = 0
        self.kv_cache_bytes = 0

    def start(self) -> "EngineRunner":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(("wake",))
        self.thread.join(timeout=10)

    def alive(self) -> bool:
        return self.thread.is_alive()

    # ---- called from the event loop ---------------------------------------------------------

    def add(self, prompt: list[int], params, stream: bool = True) -> tuple[str, asyncio.Queue]:
        """Queue a request; its queue gets ("delta", Delta) items only when `stream`."""
        rid = f"r{next(self._ids)}"
        q: asyncio.Queue = asyncio.Queue()
        self.inbox.put(("add", rid, prompt, params, asyncio.get_running_loop(), q, stream))
        return rid, q

    def abort(self, rid: str) -> None:
        self.inbox.put(("abort", rid))

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """Mean-pooled final hidden states, computed on the engine thread between steps."""
        def run():
            with torch.inference_mode():
                return [self.lm.model.hidden_states(torch.tensor([ids]))[0].float().mean(0).tolist()
                        for ids in inputs]

        fut: Future = Future()
        self.inbox.put(("call", run, fut))
        return await asyncio.wrap_future(fut)

    # ---- the engine thread ------------------------------------------------------------------

    def _send(self, rid: str, item) -> None:
        sink = self._sinks.get(rid)
        if sink is None:
            return
        loop, q = sink
        try:
            loop.call_soon_threadsafe(q.put_nowait, item)
        except RuntimeError:  # the event loop has closed (shutdown)
            pass

    def _handle(self, cmd) -> None:
        kind = cmd[0]
        if kind == "add":
            _, rid, prompt, params, loop, q, stream = cmd
            self._sinks[rid] = (loop, q)
            self._arrived[rid] = time.monotonic()
            self._held.append((rid, prompt, params, stream))
        elif kind == "abort":
            rid = cmd[1]
            self._arrived.pop(rid, None)
            held = [h for h in self._held if h[0] == rid]
            if held:  # not in the engine yet: just forget it
                self._held.remove(held[0])
                self._sinks.pop(rid, None)
            else:
                self.engine.abort(rid)
        elif kind == "call":
            _, fn, fut = cmd
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting handler
                    fut.set_exception(e)

    def _expire(self) -> None:
        """Drop the requests that have waited `max_wait` seconds without starting, with Overloaded
        (the engine's own queue included: there a request waits for room under the cache ceiling)."""
        if self.max_wait is None:
            return
        late = time.monotonic() - self.max_wait
        for rid in [h[0] for h in self._held] + [r.id for r in self.engine.waiting]:
            if self._arrived.get(rid, late) >= late:
                continue
            held = [h for h in self._held if h[0] == rid]
            if held:
                self._held.remove(held[0])
            else:
                self.engine.abort(rid)  # leaves the engine's queue at the next step
            self._fail(rid, Overloaded(f"server busy: the request waited {self.max_wait:g} s without a free "
                                       "batch slot or KV-cache room; retry"))

    def _fail(self, rid: str, e: Exception) -> None:
        self._send(rid, ("error", e))
        self._sinks.pop(rid, None)
        self._arrived.pop(rid, None)

    def _admit(self) -> None:
        """Move up to admit_per_step held requests into the engine (only as many as have a slot)."""
        e = self.engine
        queued = list(e.waiting) + ([e.prefilling.request] if e.prefilling is not None else [])
        free = self.max_batch - e.sequences - sum(r.params.samples for r in queued)
        admitted = 0
        while self._held and admitted < self.admit_per_step and (free >= self._held[0][2].samples or
                                                                  not self.engine.has_unfinished()):
            rid, prompt, params, stream = self._held.popleft()
            free -= params.samples
            admitted += 1
            # a row that failed alone ends with its error item, not with an "error" delta
            on_delta = (lambda d: d.finish_reason != "error" and self._send(d.request_id, ("delta", d))
                        ) if stream else None
            try:
                self.engine.add_request(prompt, params, rid, on_delta=on_delta)
            except LmlabError as e:
                self._fail(rid, e)

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = self.engine.has_unfinished() or bool(self._held)
            try:
                cmd = self.inbox.get_nowait() if busy else self.inbox.get(timeout=0.5)
            except queue.Empty:
                cmd = None
            while cmd is not None:
                if cmd[0] != "wake":
                    self._handle(cmd)
                try:
                    cmd = self.inbox.get_nowait()
                except queue.Empty:
                    cmd = None
            self._expire()
            self._admit()
            if not self.engine.has_unfinished():
                self.running, self.waiting = 0, len(self._held)
                continue
            try:
                outputs = self.engine.step()
            except Exception as e:  # noqa: BLE001 - a bug must not take the server down
                log.exception("engine step failed; failing its requests and starting a fresh engine")
                self.step_errors += 1
                for rid in list(self._sinks):
                    self._send(rid, ("error", e))
                self._sinks.clear()
                self._held.clear()
                self._arrived.clear()
                self.engine = self.lm.new_engine(max_batch=self.max_batch, **self.engine_options)
                time.sleep(0.01)
                continue
            self.steps += 1
            if not self.engine.has_unfinished() and not self._held:
                self.engine.cache.release()  # idle: the KV memory of the last requests goes back
            self.kv_cache_bytes = self.engine.cache.nbytes  # set first: a reader seeing `running` sees it
            self.running, self.waiting = self.engine.sequences, len(self.engine.waiting) + len(self._held)
            for out in outputs:
                # a request whose own values broke its row failed alone; the others go on
                self._send(out.request_id, ("error", LmlabError(out.error)) if out.error else ("done", out))
                self._sinks.pop(out.request_id, None)
                self._arrived.pop(out.request_id, None)
