"""The Engine: every forward pass that produces tokens or log-probs goes through here.

Continuous batching: requests wait in a queue; each `step()` admits what fits (the admitted
prompts share one right-padded prefill pass in which identical prompts are computed once; a
request's samples, and requests on a prompt already in the pass, get its cache by copy), then
runs one batched decode step for every running sequence. Finished sequences leave between steps
and their slot is reused, so a server can add and cancel requests at any time.

A prompt longer than `prefill_chunk` is prefilled a chunk per step and then decodes in its own
cache (a "lane", one decode pass of its own per step) rather than in the slot cache, whose rows
all have the longest row's length: one 8k-token prompt would otherwise make every short
request's slot 8k tokens long, and the ceiling would hold a handful of requests.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from lmlab.engine import constrained, processors
from lmlab.engine.kv_cache import KVCache, SlotCache
from lmlab.engine.params import SamplingParams
from lmlab.engine.stop import StopChecker
from lmlab.errors import LmlabError


@dataclass
class Completion:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float = 0.0
    logprobs: list[dict[int, float]] | None = None  # per token: {id: logprob}, chosen id included
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error" (see RequestOutput.error)
    stop_reason: str | int | None = None  # the stop string or stop token that ended it
    incomplete: bool = False  # a constrained output cut off (length, stop string) before its grammar was complete


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[Completion]
    prompt_logprobs: list[dict[int, float] | None] | None = None
    finished: bool = False
    error: str | None = None  # why this request failed alone (its other rows of the step went on)


@dataclass
class Delta:
    """What one step added to one sequence, for streaming."""
    request_id: str
    index: int
    token_id: int | None
    text: str
    logprobs: dict[int, float] | None
    finish_reason: str | None
    # on the last Delta of a row (finish_reason set): its constrained output was cut off (length,
    # a stop string) before its grammar was complete, as Completion.incomplete says
    incomplete: bool = False


class _Sequence:
    def __init__(self, request: "_Request", index: int, generator, tokenizer, eos: set[int]):
        p = request.params
        self.request, self.params, self.index = request, p, index
        self.generator = generator
        self.out = Completion(index, logprobs=[] if p.logprobs is not None else None)
        self.stop = StopChecker(tokenizer, p.stop, p.include_stop_str_in_output)
        self.stop_ids = set(p.stop_token_ids) | (set() if p.ignore_eos else eos)
        self.counts = None  # output token counts [V], only when presence/frequency penalties are on
        self.seen = torch.tensor(request.prompt, dtype=torch.long)
        self.slot = -1
        self.lane: _Chunked | None = None  # a long prompt's own cache, instead of a slot
        self.last_token: int | None = None
        self.constraint = request.constraint.fork() if request.constraint is not None else None


class _Request:
    def __init__(self, request_id: str, prompt: list[int], params: SamplingParams, on_delta, scorer,
                 constraint=None):
        self.id, self.prompt, self.params, self.on_delta, self.scorer = request_id, prompt, params, on_delta, scorer
        self.constraint = constraint  # each sample gets its own copy (_Sequence)
        self.seqs: list[_Sequence] = []
        self.prompt_logprobs = None
        self.aborted = False
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return bool(self.seqs) and all(s.out.finish_reason for s in self.seqs)


class _Chunked:
    """A long prompt: prefilled chunk by chunk into its own cache, sized for its prompt and
    max_tokens; after the last chunk its samples (one row each) decode in that cache, a lane of
    their own beside the slot cache."""

    def __init__(self, request: _Request, engine: "Engine"):
        self.request, self.done = request, 0
        self.kv = KVCache(engine.config, 1, engine._tokens(request.prompt, request.params), engine.dtype,
                          engine.device)
        self.seqs: list[_Sequence] = []  # once prefilled
        if request.params.prompt_logprobs is not None:
            request.prompt_logprobs = [None]

    @property
    def tokens(self) -> int:
        """Cache positions it holds or will hold (a row per sample once it decodes)."""
        return self.request.params.samples * self.kv.max_len


def _plain_greedy(params: list[SamplingParams]) -> bool:
    """Greedy rows that no processor changes: the argmax of the raw logits is the token."""
    return all(p.greedy and p.repetition_penalty == 1 and not (p.presence_penalty or p.frequency_penalty)
               and not p.logit_bias and not p.min_tokens and p.watermark is None and p.grammar is None
               for p in params)


class Engine:
    def __init__(self, model, tokenizer, eos_token_ids: list[int] | None = None, max_batch: int = 32,
                 compile: bool = False, prefill_tokens: int = 4096, compile_options: dict | None = None,
                 greedy_pick=None, prefill_chunk: int = 512, max_cache_tokens: int | None = None):
        """compile: torch.compile the decode step (a minute or two once, so opt-in; prefill stays
        eager), with `compile_options` added to inductor's; greedy_pick: a fused (argmax, log-prob)
        for plain greedy rows. Both come from a platform's speed layer (lmlab.cpu.optimize).
        prefill_chunk: a prompt longer than this is prefilled this many tokens per step, between
        decode steps of the running sequences (chunked prefill), so a long prompt does not stall
        them and an abort takes effect between chunks. max_cache_tokens: a ceiling on the KV cache
        (slots x tokens per slot, the chunked prompt's cache included) that admission respects:
        a request that would pass it waits; one that never fits is refused. The cache shrinks
        back when the running work needs far less than it holds."""
        self.model, self.tokenizer = model, tokenizer
        self.greedy_pick = greedy_pick
        # The model is fixed for the engine's life, so its modules need no guards (1.5 -> 0.3
        # ms/step), and the graph's wrapper need not check the size and stride of buffers that the
        # graph itself produced (~1 ms of a 14 ms int8 step).
        options = {"size_asserts": False, "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
                   **(compile_options or {})}
        self.decode_forward = torch.compile(model, dynamic=True, options=options) if compile else model
        self._announced = False
        self.config = model.config
        self.eos = set(eos_token_ids or [])
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens  # padded prompt tokens per batched prefill pass
        if prefill_chunk < 1:
            raise LmlabError(f"prefill_chunk = {prefill_chunk}: must be at least 1 token")
        self.prefill_chunk = prefill_chunk
        self.prefilling: _Chunked | None = None  # the long prompt being prefilled chunk by chunk
        self.lanes: list[_Chunked] = []  # long prompts prefilled, decoding in their own caches
        self.max_cache_tokens = max_cache_tokens
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        idle = 256 if max_cache_tokens is None else max(1, min(256, max_cache_tokens))
        self.cache = SlotCache(self.config, self.dtype, self.device, max_len=idle)
        self.waiting: deque[_Request] = deque()
        self.running: list[_Sequence] = []  # running[i] lives in cache slot i
        self.requests: dict[str, _Request] = {}
        self._ids = itertools.count()

    # ---- public API -------------------------------------------------------------------------

    def add_request(self, prompt: list[int], params: SamplingParams, request_id: str | None = None,
                    on_delta: Callable[[Delta], None] | None = None,
                    scorer: Callable[[list[int], Completion], float] | None = None) -> str:
        """Queue a prompt (token ids). `on_delta` streams each new piece; `scorer` ranks best_of samples."""
        ctx = self.config.max_seq_len
        if not prompt:
            raise LmlabError("empty prompt: nothing to continue")
        if len(prompt) >= ctx:
            raise LmlabError(f"prompt has {len(prompt)} tokens; the model's context is {ctx} tokens")
        if params.samples > self.max_batch:
            raise LmlabError(f"n/best_of = {params.samples} exceeds the engine's batch of {self.max_batch}")
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise LmlabError(f"duplicate request id {request_id!r}")
        if self.max_cache_tokens is not None:
            need = params.samples * self._tokens(prompt, params)
            if need > self.max_cache_tokens:
                raise LmlabError(f"the request needs {need} KV-cache tokens (n/best_of x (prompt + max_tokens)); "
                                 f"the engine's ceiling is max_cache_tokens = {self.max_cache_tokens}: "
                                 "lower max_tokens or n")
        constraint = constrained.start(params.grammar, self.tokenizer, self.config.vocab_size)
        req = _Request(request_id, list(prompt), params, on_delta, scorer, constraint)
        self.requests[request_id] = req
        self.waiting.append(req)
        return request_id

    def abort(self, request_id: str) -> None:
        """Cancel a request: its slots are freed before the next step."""
        req = self.requests.get(request_id)
        if req is not None:
            req.aborted = True

    @property
    def sequences(self) -> int:
        """Sequences decoding now: the slot cache's and the long prompts' lanes'."""
        return len(self.running) + sum(not s.out.finish_reason for lane in self.lanes for s in lane.seqs)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.prefilling or self.lanes)

    @property
    def cache_bytes(self) -> int:
        """Bytes the KV caches hold now (the slot cache, a chunked prompt's and the lanes')."""
        extra = self.lanes + ([self.prefilling] if self.prefilling is not None else [])
        return self.cache.nbytes + sum(t.numel() * t.element_size() for j in extra for t in j.kv.k + j.kv.v)

    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        """Admit what fits, decode one token for every running sequence; return finished requests."""
        self._reap_aborted()
        self._compact()  # aborted sequences leave before anything else runs
        # One long prompt at a time is prefilled in chunks. Short prompts behind it are still
        # admitted while it runs (its batch place and cache stay reserved for it), so one long prompt
        # does not hold back the first token of every short request; a long prompt waiting
        # behind it waits, and so does everything behind that one (order among them is kept).
        while self.waiting and self._room([self.waiting[0]]):
            if self._long(self.waiting[0]):
                if self.prefilling is not None:
                    break
                if self.max_cache_tokens is not None:  # its own cache comes beside the slot cache's
                    self.cache.resize(max(len(self.running), 1), self._running_tokens())
                self.prefilling = _Chunked(self.waiting.popleft(), self)
                continue
            self._prefill(self._admit())
            self._compact()  # a sample may have stopped on its first token
        if self.prefilling is not None:
            self._prefill_chunk()
            self._compact()
        if self.running:
            self._decode()
        for lane in self.lanes:
            self._decode_lane(lane)
        self._compact()
        self._release()
        return self._collect()

    def complete(self, prompt: list[int], params: SamplingParams,
                 on_delta: Callable[[Delta], None] | None = None) -> RequestOutput:
        """Run one request to the end (other queued work advances too); Ctrl-C cancels it."""
        rid = self.add_request(prompt, params, on_delta=on_delta)
        try:
            while True:
                for out in self.step():
                    if out.request_id == rid:
                        return out
        except BaseException:
            self.abort(rid)
            self.step()
            raise

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 scorer=None, progress: bool = False) -> list[RequestOutput]:
        """Run prompts to completion (offline batch); outputs in prompt order."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        ids = [self.add_request(p, sp, scorer=scorer) for p, sp in zip(prompts, params)]
        done: dict[str, RequestOutput] = {}
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(ids), desc="generate", unit="req")
        while self.has_unfinished():
            for out in self.step():
                done[out.request_id] = out
                if bar:
                    bar.update(1)
        if bar:
            bar.close()
        return [done[i] for i in ids]

    # ---- scheduling -------------------------------------------------------------------------

    def _admit(self) -> list[_Request]:
        """The waiting requests that fit in the batch, in order, while the padded prefill stays
        within `prefill_tokens` (the first one always goes)."""
        group, longest = [], 0
        while self.waiting:
            req = self.waiting[0]
            n = max(longest, len(req.prompt))
            if group and (len(group) + 1) * n > self.prefill_tokens:
                break
            if group and (self._long(req) or not self._room(group + [req])):
                break  # prefilled alone, in chunks; or past the batch or the cache ceiling: waits
            group.append(self.waiting.popleft())
            longest = n
        return group

    def _prefill(self, reqs: list[_Request]) -> None:
        """One forward pass over the distinct prompts, right-padded (causal attention never
        reaches the padding, and a row's cache length ignores it); distinct prompt u goes to slot
        first + u. Every other sequence (a request's extra samples, a request whose prompt an
        earlier one in the group has: RL rollouts, the same question asked G times) gets a copy of
        that prompt's cache in a slot after them."""
        first = len(self.running)
        unique: dict[tuple[int, ...], int] = {}
        row_of = [unique.setdefault(tuple(r.prompt), len(unique)) for r in reqs]
        prompts = list(unique)
        lens = [len(p) for p in prompts]
        # A prefix- or prompt-tuned model writes its key/value prefix into the cache first.
        prefix = self.model.prefix.length if getattr(self.model, "prefix", None) is not None else 0
        total = sum(r.params.samples for r in reqs)
        self.cache.reserve(first + total, self._running_tokens(reqs), self._slot_limit())
        self.cache.active = first + total
        ids = torch.zeros(len(prompts), max(lens), dtype=torch.long)
        for u, p in enumerate(prompts):
            ids[u, :lens[u]] = torch.tensor(p)
            self.cache.lengths[first + u] = prefix + lens[u]
        view = self.cache.view(first, len(prompts))
        h = self.model.hidden_states(ids.to(self.device), cache=view)
        last = self.model.lm_head(h[torch.arange(len(prompts)), torch.tensor(lens) - 1]).float()
        for req, u in zip(reqs, row_of):
            p, n = req.params, lens[u]
            if p.prompt_logprobs is not None:
                logps = self.model.lm_head(h[u, :n - 1]).float().log_softmax(-1)
                req.prompt_logprobs = [None] + _top_logprobs(logps, req.prompt[1:], p.prompt_logprobs)
        self._seat(reqs, row_of, first, len(prompts), last)

    def _prefill_chunk(self) -> None:
        """The next `prefill_chunk` tokens of the long prompt, into its own cache; after the last
        chunk its sequences join the running batch as a one-pass prefill's would."""
        job = self.prefilling
        req, a = job.request, job.done
        b = min(a + self.prefill_chunk, len(req.prompt))
        ids = torch.tensor([req.prompt[a:b]], device=self.device)
        h = self.model.hidden_states(ids, cache=job.kv)[0]
        k = req.params.prompt_logprobs
        if k is not None:  # position i predicts prompt token i + 1; the last one predicts nothing
            stop = min(b, len(req.prompt) - 1)
            if stop > a:
                logps = self.model.lm_head(h[:stop - a]).float().log_softmax(-1)
                req.prompt_logprobs += _top_logprobs(logps, req.prompt[a + 1:stop + 1], k)
        job.done = b
        if b < len(req.prompt):
            return
        self.prefilling = None
        self.lanes.append(job)
        p = req.params
        if p.samples > 1:  # a row per sample, each from the prompt's cache
            job.kv.reorder(torch.zeros(p.samples, dtype=torch.long, device=self.device))
        for i in range(p.samples):
            gen = None
            if p.seed is not None:
                gen = torch.Generator(device=self.device).manual_seed(p.seed + 1_000_003 * i)
            seq = _Sequence(req, i, gen, self.tokenizer, self.eos)
            seq.lane = job
            req.seqs.append(seq)
        job.seqs = list(req.seqs)
        self._advance(job.seqs, self.model.lm_head(h[-1:]).float().expand(p.samples, -1).clone())

    # ---- memory -----------------------------------------------------------------------------

    def _prefix(self) -> int:
        return self.model.prefix.length if getattr(self.model, "prefix", None) is not None else 0

    def _tokens(self, prompt: list[int], params: SamplingParams) -> int:
        """Cache positions one sample of a request can reach (a sequence ends at the context)."""
        P = self._prefix()
        return min(P + len(prompt) + params.max_tokens, P + self.config.max_seq_len)

    def _long(self, req: _Request) -> bool:
        """Prefilled in chunks and decoded in a lane of its own."""
        return len(req.prompt) > self.prefill_chunk

    def _running_tokens(self, reqs: list[_Request] = ()) -> int:
        """Tokens per slot that the running sequences and `reqs` can reach."""
        return max([self._tokens(s.request.prompt, s.params) for s in self.running]
                   + [self._tokens(r.prompt, r.params) for r in reqs] + [1])

    def _room(self, reqs: list[_Request]) -> bool:
        """Whether `reqs` can start now: every sequence (the slot cache's, the lanes', the long
        prompt being prefilled) within `max_batch`; and, with a ceiling, the (rectangular) slot
        cache of the short ones plus the long ones' own caches within it."""
        jobs = self.lanes + ([self.prefilling] if self.prefilling is not None else [])
        short = [r for r in reqs if not self._long(r)]
        slots = len(self.running) + sum(r.params.samples for r in short)
        seqs = slots + sum(r.params.samples for r in reqs if self._long(r)) + sum(j.request.params.samples for j in jobs)
        if seqs > self.max_batch:
            return False
        if self.max_cache_tokens is None:
            return True
        lanes = sum(j.tokens for j in jobs) + sum(r.params.samples * self._tokens(r.prompt, r.params)
                                                  for r in reqs if self._long(r))
        return slots * self._running_tokens(short) + lanes <= self.max_cache_tokens

    def _slot_limit(self) -> int | None:
        """What the slot cache may hold: the ceiling less the long prompts' own caches."""
        if self.max_cache_tokens is None:
            return None
        jobs = self.lanes + ([self.prefilling] if self.prefilling is not None else [])
        return self.max_cache_tokens - sum(j.tokens for j in jobs)

    def _release(self) -> None:
        """Shrink the slot cache when it holds far more than the running work can use (a big
        n=16 request gone, the batch empty): reallocate to what is needed, keeping live rows."""
        slots, length = self.cache.capacity
        if self.running:
            want = len(self.running), self._running_tokens()
        else:
            want = self.cache.idle
        # 4x of slack: a batch that grows and shrinks around a size does not reallocate every
        # step; and a cache within the idle size is left alone
        if slots * length > max(4 * want[0] * want[1], self.cache.idle[0] * self.cache.idle[1]):
            self.cache.resize(*want)

    def _seat(self, reqs: list[_Request], row_of: list[int], first: int, n_unique: int,
              last: torch.Tensor) -> None:
        """Sequences for prefilled requests: distinct prompt u is in slot first + u; a request's
        other samples get a copy of it in the slots after them; then their first tokens."""
        seqs, rows, extra, taken = [], [], first + n_unique, set()
        for req, u in zip(reqs, row_of):
            p = req.params
            for i in range(p.samples):
                gen = None
                if p.seed is not None:
                    gen = torch.Generator(device=self.device).manual_seed(p.seed + 1_000_003 * i)
                seq = _Sequence(req, i, gen, self.tokenizer, self.eos)
                if u not in taken:
                    seq.slot = first + u
                    taken.add(u)
                else:
                    self.cache.copy(first + u, extra)
                    seq.slot, extra = extra, extra + 1
                req.seqs.append(seq)
                seqs.append(seq)
                rows.append(u)
        order = sorted(range(len(seqs)), key=lambda k: seqs[k].slot)  # running[i] lives in slot i
        seqs = [seqs[k] for k in order]
        self.running += seqs
        # a copy per sample: processors write in place
        self._advance(seqs, last[torch.tensor([rows[k] for k in order], device=last.device)])

    def _decode(self) -> None:
        seqs = self.running
        self.cache.active = len(seqs)
        tokens = torch.tensor([[s.last_token] for s in seqs], device=self.device)
        c = self.config
        self.cache.begin_decode({c.sliding_window if c.windowed(i) else None for i in range(c.n_layers)})
        if self.decode_forward is not self.model and not self._announced:
            self._announced = True  # the first compiled step is the one silent wait: say so
            print("lmlab: compiling the decode step (a minute or two the first time on this machine, "
                  "seconds once cached on disk)", file=sys.stderr, flush=True)
        try:
            logits = self.decode_forward(tokens, self.cache.pos[:, None], cache=self.cache)
        except Exception as e:  # torch.compile needs a C++ toolchain; without one, run eagerly
            if self.decode_forward is self.model:
                raise
            warnings.warn(f"torch.compile failed ({type(e).__name__}); decoding eagerly")
            self.decode_forward = self.model
            logits = self.model(tokens, self.cache.pos[:, None], cache=self.cache)
        logits = logits[:, -1].float()
        self.cache.end_decode()
        self._advance(seqs, logits)

    def _decode_lane(self, lane: _Chunked) -> None:
        """One decode step of a long prompt's samples in their own cache (rows of equal length:
        a sample that has finished is still computed, unread, until they all have)."""
        tokens = torch.tensor([[s.last_token if s.last_token is not None else 0] for s in lane.seqs],
                              device=self.device)
        logits = self.model(tokens, cache=lane.kv)[:, -1].float()
        live = [i for i, s in enumerate(lane.seqs) if not s.out.finish_reason]
        self._advance([lane.seqs[i] for i in live], logits[live])

    def _advance(self, seqs: list[_Sequence], logits: torch.Tensor) -> None:
        """Process logits, choose one token per sequence, apply stop rules, stream."""
        params = [s.params for s in seqs]
        if self.greedy_pick and _plain_greedy(params) and all(p.logprobs is None for p in params):
            # argmax and its log-prob in one kernel: no [B, vocab] log-softmax to write and read
            chosen, chosen_lps = self.greedy_pick(logits)
            logprobs = None
        else:
            logprobs = logits.log_softmax(-1)
            chosen, failed = self._choose(seqs, params, logits)
            chosen_lps = logprobs.gather(1, chosen[:, None])[:, 0]
            for row, why in failed.items():
                self._fail(seqs[row], why)
        tokens, chosen_lps = chosen.tolist(), chosen_lps.tolist()  # one read each
        for row, (seq, t, lp) in enumerate(zip(seqs, tokens, chosen_lps)):
            out, p = seq.out, seq.params
            if out.finish_reason:  # failed in _choose
                continue
            out.cumulative_logprob += lp
            if t in seq.stop_ids:
                text = seq.stop.flush()  # text held back for a stop string that can no longer complete
                out.text += text
                self._finish(seq, "stop", t, None, None, text)
                continue
            if seq.constraint is not None:
                try:
                    seq.constraint.advance(t)
                except LmlabError as e:
                    self._fail(seq, str(e))
                    continue
            out.token_ids.append(t)
            seq.last_token = t
            seq.seen = torch.cat([seq.seen, torch.tensor([t])]) if p.repetition_penalty != 1 else seq.seen
            if seq.counts is not None:
                seq.counts[t] += 1
            top = _top_logprobs(logprobs[row:row + 1], [t], p.logprobs)[0] if p.logprobs is not None else None
            if top is not None:
                out.logprobs.append(top)
            text, stopped = seq.stop.push(t)
            reason = "stop" if stopped is not None else None
            if reason is None and seq.constraint is not None and seq.constraint.is_finished():
                reason, text = "stop", text + seq.stop.flush()  # the grammar allows nothing more
            length = seq.lane.kv.length if seq.lane is not None else self.cache.lengths[seq.slot]
            if reason is None and (len(out.token_ids) >= p.max_tokens or length + 1 >= self.config.max_seq_len):
                reason, text = "length", text + seq.stop.flush()
            out.text += text
            if reason:
                self._finish(seq, reason, stopped, t, top, text)
            elif seq.request.on_delta is not None:
                seq.request.on_delta(Delta(seq.request.id, seq.index, t, text, top, None))

    def _choose(self, seqs, params, logits) -> tuple[torch.Tensor, dict[int, str]]:
        """Processed and sampled tokens for the batch, and {row: why} for rows that failed.
        One row's values must not fail the others: if the batched chain raises, each row is
        run alone and only the rows that fail again are dropped."""
        raw = logits.clone()  # processors write in place; a retry starts from the model's logits
        try:
            out = self._processed(seqs, params, logits)
            bad = processors.unusable(out).tolist()
            if not any(bad):
                return processors.sample(out, params, [s.generator for s in seqs]), {}
        except Exception:  # noqa: BLE001 - isolated row by row below
            pass
        chosen, failed = raw.argmax(-1), {}
        for row, (s, p) in enumerate(zip(seqs, params)):
            try:
                one = self._processed([s], [p], raw[row:row + 1].clone())
                if processors.unusable(one)[0]:
                    raise LmlabError("no token can be sampled: the sampling values leave no finite "
                                     "probability (NaN or all masked)")
                chosen[row] = processors.sample(one, [p], [s.generator])[0]
            except Exception as e:  # noqa: BLE001 - this request fails alone
                failed[row] = f"{type(e).__name__}: {e}" if not isinstance(e, LmlabError) else str(e)
        return chosen, failed

    def _fail(self, seq: _Sequence, why: str) -> None:
        seq.request.error = seq.request.error or why
        for other in seq.request.seqs:  # a request fails as a whole, all its samples
            if not other.out.finish_reason:
                self._finish(other, "error", None, None, None)

    def _processed(self, seqs, params, logits):
        if _plain_greedy(params):
            return logits
        for row, s in enumerate(seqs):
            if len(s.out.token_ids) < s.params.min_tokens and s.stop_ids:
                logits[row, list(s.stop_ids)] = float("-inf")
            if s.counts is None and (s.params.presence_penalty or s.params.frequency_penalty):
                s.counts = torch.zeros(logits.shape[-1], device=logits.device)
                for t in s.out.token_ids:
                    s.counts[t] += 1
        logits = processors.penalise(logits, params, [s.seen for s in seqs], [s.counts for s in seqs])
        logits = processors.bias(logits, params)
        logits = constrained.mask_logits(logits, [s.constraint for s in seqs], [s.stop_ids for s in seqs])
        logits = processors.warp(logits, params)
        if any(p.watermark is not None for p in params):
            from lmlab.safety import watermark
            prev = [s.out.token_ids[-1] if s.out.token_ids else s.request.prompt[-1] for s in seqs]
            logits = watermark.apply(logits, [p.watermark for p in params], prev)
        return logits

    def _finish(self, seq: _Sequence, reason: str, stop_reason, token, top, text: str = "") -> None:
        seq.out.finish_reason, seq.out.stop_reason = reason, stop_reason
        if seq.constraint is not None and reason in ("stop", "length"):
            seq.out.incomplete = not seq.constraint.is_complete()
        if seq.request.on_delta is not None:
            seq.request.on_delta(Delta(seq.request.id, seq.index, token, text, top, reason, seq.out.incomplete))

    def _reap_aborted(self) -> None:
        for req in list(self.waiting):
            if req.aborted:
                self.waiting.remove(req)
                req.seqs = [_Sequence(req, 0, None, self.tokenizer, self.eos)]
                req.seqs[0].out.finish_reason = "abort"
        job = self.prefilling
        if job is not None and job.request.aborted:  # between chunks: its cache is dropped
            self.prefilling = None
            job.request.seqs = [_Sequence(job.request, 0, None, self.tokenizer, self.eos)]
            job.request.seqs[0].out.finish_reason = "abort"
        for seq in self.running + [s for lane in self.lanes for s in lane.seqs]:
            if seq.request.aborted and not seq.out.finish_reason:
                self._finish(seq, "abort", None, None, None)

    def _compact(self) -> None:
        """Free finished sequences' slots, keeping the running rows 0..n-1 dense; drop the lanes
        whose samples have all finished."""
        self.lanes = [lane for lane in self.lanes if not all(s.out.finish_reason for s in lane.seqs)]
        keep = [s for s in self.running if not s.out.finish_reason]
        for new_slot, seq in enumerate(keep):
            if seq.slot != new_slot:
                self.cache.copy(seq.slot, new_slot)
                seq.slot = new_slot
        self.running = keep
        self.cache.active = len(keep)
        for i in range(len(keep), len(self.cache.lengths)):
            self.cache.lengths[i] = 0

    def _collect(self) -> list[RequestOutput]:
        finished = [r for r in self.requests.values() if r.finished]
        for r in finished:
            del self.requests[r.id]
        return [self._output(r) for r in finished]

    def _output(self, req: _Request) -> RequestOutput:
        outs = [s.out for s in req.seqs]
        p = req.params
        if p.best_of and p.best_of > p.n:
            key = (lambda c: req.scorer(req.prompt, c)) if req.scorer else (lambda c: c.cumulative_logprob)
            outs = sorted(outs, key=key, reverse=True)[:p.n]
            for i, c in enumerate(outs):
                c.index = i
        return RequestOutput(req.id, req.prompt, outs, req.prompt_logprobs, finished=True, error=req.error)


def _top_logprobs(logprobs: torch.Tensor, chosen: list[int], k: int) -> list[dict[int, float]]:
    """Per row: the top-k {id: logprob}, plus the chosen id (always present)."""
    out = []
    top = logprobs.topk(k, dim=-1) if k else None
    for row, t in enumerate(chosen):
        d = {t: float(logprobs[row, t])}
        if top is not None:
            for v, i in zip(top.values[row].tolist(), top.indices[row].tolist()):
                d.setdefault(i, v)
        out.append(d)
    return out
