"""Judge and teacher backends: a model lmlab loads, or an OpenAI-compatible endpoint.

Both answer the same three calls, over many conversations at once:
  complete(conversations, max_tokens, temperature, choice=, regex=) -> list[str]
  top_logprobs(conversations, k) -> list[{token text: logprob}]   (the first generated token)
  option_logprobs(conversations, options) -> list[{option: logprob}] (G-Eval's score tokens)

`choice` / `regex` ask for a constrained verdict ("[[A]]" / "[[B]]" / "[[C]]", "\\[\\[(10|[1-9])\\]\\]").
`constraint_params` is the one place where they become decoding constraints: the engine's
SamplingParams fields `guided_choice` / `guided_regex` when the engine has them, vLLM's request
fields of the same names on an endpoint built with `guided=True`. Without a constraint the
caller parses the text strictly and counts what does not parse (grading.py).

Every answer is kept in an SQLite cache keyed by a hash of the backend's identity and the
request, written as soon as it is known: a re-run pays only for what is missing, and the
verdicts finished before an endpoint went down survive the failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from lmlab.errors import LmlabError

Conversation = list[dict]  # [{"role": "system" | "user" | "assistant", "content": str}, ...]


def default_cache_path() -> Path:
    home = Path(os.environ.get("LMLAB_HOME") or Path.home() / ".cache" / "lmlab")
    return home / "cache" / "judge.sqlite"


class Cache:
    """request hash -> JSON answer, in SQLite (one connection per thread; writes commit at once)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._local = threading.local()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db().execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db().commit()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
        return db

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str):
        if not self.path:
            return None
        row = self._db().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value) -> None:
        if self.path:
            self._db().execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))
            self._db().commit()

    def __len__(self) -> int:
        if not self.path:
            return 0
        return self._db().execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def constraint_params(choice: list[str] | None, regex: str | None, available: set[str]) -> dict:
    """The constrained-decoding fields for a verdict, limited to what the decoder supports."""
    out = {}
    if choice and "guided_choice" in available:
        out["guided_choice"] = list(choice)
    elif regex and "guided_regex" in available:
        out["guided_regex"] = regex
    return out


class Backend:
    """Shared caching: subclasses implement `_complete`, `_top_logprobs`, `_option_logprobs` over
    the requests the cache does not hold."""

    identity: dict
    guided: bool = False  # True when verdicts are constrained (they still go through the parser)

    def __init__(self, cache: str | Path | None = None):
        self.cache = Cache(cache)
        self.calls = 0  # requests actually sent to the model (cache misses)

    def _cached(self, kind: str, items: list, run: Callable[[list, Callable[[int, object], None]], None]) -> list:
        keys = [Cache.key(self.identity, kind, item) for item in items]
        out = [self.cache.get(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            def done(j: int, value) -> None:  # called as each answer arrives
                i = todo[j]
                out[i] = value
                self.cache.put(keys[i], value)
            self.calls += len(todo)
            run([items[i] for i in todo], done)
        return out

    def complete(self, conversations: list[Conversation], max_tokens: int = 512, temperature: float = 0.0,
                 choice: list[str] | None = None, regex: str | None = None, seed: int | None = 0) -> list[str]:
        req = {"max_tokens": max_tokens, "temperature": temperature, "choice": choice, "regex": regex,
               "seed": seed}
        items = [{"messages": c, **req} for c in conversations]
        return self._cached("complete", items, self._complete)

    def top_logprobs(self, conversations: list[Conversation], k: int = 20) -> list[dict[str, float]]:
        """The k most likely first tokens of the answer, as {token text: logprob}."""
        items = [{"messages": c, "k": k} for c in conversations]
        return self._cached("top_logprobs", items, self._top_logprobs)

    def option_logprobs(self, conversations: list[Conversation], options: list[str]) -> list[dict[str, float]]:
        """log P(answer starts with option) for each option (-inf when the backend cannot see it)."""
        items = [{"messages": c, "options": list(options)} for c in conversations]
        return self._cached("option_logprobs", items, self._option_logprobs)

    def _option_logprobs(self, items, done):
        # From the first token's top log-probs: exact for options that are single tokens.
        tops = self._top_logprobs_list([{"messages": it["messages"], "k": 20} for it in items])
        for j, (it, top) in enumerate(zip(items, tops)):
            merged: dict[str, float] = {}
            for tok, lp in top.items():
                t = tok.strip()
                merged[t] = float(math.log(math.exp(merged[t]) + math.exp(lp))) if t in merged else lp
            done(j, {o: merged.get(o, -math.inf) for o in it["options"]})

    def _top_logprobs_list(self, items) -> list:
        out = [None] * len(items)
        self._top_logprobs(items, lambda j, v: out.__setitem__(j, v))
        return out


class LocalBackend(Backend):
    """A model lmlab loads, judged through its engine's continuous batching. `max_batch` bounds
    how many requests are queued at once (1 = one request at a time, for comparison)."""

    def __init__(self, lm, cache: str | Path | None = None, max_batch: int | None = None,
                 progress: bool = True, name: str | None = None):
        super().__init__(cache)
        from lmlab.engine.params import SamplingParams

        self.lm, self.progress = lm, progress
        self.max_batch = max_batch or lm.engine.max_batch
        self.name = name or (lm.folder.name if lm.folder else "local")
        self._fields = {f.name for f in dataclasses.fields(SamplingParams)}
        self.guided = "guided_choice" in self._fields
        # constrained and free verdicts differ, so they are cached apart
        self.identity = {"local": str(lm.folder) if lm.folder else self.name, "guided": self.guided}

    def _ids(self, conversation: Conversation) -> list[int]:
        ids = self.lm.prompt_ids(conversation)
        ctx = self.lm.config.max_seq_len
        if len(ids) >= ctx:  # keep the end (the verdict format), leaving room for the judgment
            ids = ids[-max(1, ctx - 600):]
        return ids

    def _run(self, items, params, done, read: Callable):
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="judge", unit="req", disable=not self.progress or len(items) < 2)
        for b in range(0, len(items), self.max_batch):
            chunk = items[b:b + self.max_batch]
            outs = self.lm.engine.generate([self._ids(it["messages"]) for it in chunk],
                                           [params(it) for it in chunk])
            for j, out in enumerate(outs):
                if out.error:
                    raise LmlabError(f"judge model failed on a request: {out.error}")
                done(b + j, read(out))
                bar.update(1)
        bar.close()

    def _complete(self, items, done):
        from lmlab.engine.params import SamplingParams

        def params(it):
            return SamplingParams(max_tokens=it["max_tokens"], temperature=it["temperature"], seed=it["seed"],
                                  **constraint_params(it["choice"], it["regex"], self._fields))
        self._run(items, params, done, lambda out: out.outputs[0].text)

    def _top_logprobs(self, items, done):
        from lmlab.engine.params import SamplingParams

        tok = self.lm.tokenizer
        self._run(items, lambda it: SamplingParams(max_tokens=1, temperature=0, logprobs=it["k"]), done,
                  lambda out: {tok.decode([i], skip_special_tokens=False): lp
                               for i, lp in (out.outputs[0].logprobs or [{}])[0].items()})

    def _option_logprobs(self, items, done):
        """Exact: the log-likelihood of each option's tokens after the prompt (one batched
        scoring pass; options that take several tokens, such as "10", are scored whole)."""
        from lmlab.engine.scoring import score

        tok = self.lm.tokenizer
        reqs, where = [], []
        for j, it in enumerate(items):
            ctx = self._ids(it["messages"])
            for o in it["options"]:
                reqs.append((ctx, tok.encode(o, add_special_tokens=False)))
                where.append((j, o))
        scores = score(self.lm.model, reqs)
        out: list[dict] = [{} for _ in items]
        for (j, o), s in zip(where, scores):
            out[j][o] = s.logprob
        for j, it in enumerate(items):
            done(j, _exclusive(out[j], {o: tok.encode(o, add_special_tokens=False) for o in it["options"]}))


def _exclusive(logprobs: dict[str, float], tokens: dict[str, list[int]]) -> dict[str, float]:
    """P(answer is exactly o) when o's tokens begin another option's ("1" and "10" as "1","0"):
    P("1") counts every answer starting with "1", so the longer options' mass is taken off."""
    out = {}
    for o, lp in logprobs.items():
        p = math.exp(lp) - sum(math.exp(logprobs[q]) for q, t in tokens.items()
                               if len(t) > len(tokens[o]) and t[:len(tokens[o])] == tokens[o])
        out[o] = math.log(p) if p > 1e-30 else -math.inf
    return out


class EndpointBackend(Backend):
    """An OpenAI-compatible /v1/chat/completions endpoint (lmlab serve, vLLM, llama.cpp's server,
    OpenAI): `concurrency` requests in flight, `retries` tries with exponential backoff on
    connection errors, timeouts, 429 and 5xx; then an LmlabError naming the endpoint and the
    last error. Answers that did arrive are cached before the error is raised."""

    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", cache: str | Path | None = None,
                 concurrency: int = 8, retries: int = 4, backoff: float = 1.0, timeout: float = 120.0,
                 guided: bool = False, progress: bool = True):
        super().__init__(cache)
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise LmlabError(f"judge url must start with http:// or https://, got {url!r}")
        if not url.endswith("/chat/completions"):
            url = url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")
        self.url, self.model, self.name = url, model, model
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.concurrency, self.retries, self.backoff, self.timeout = concurrency, retries, backoff, timeout
        self.guided, self.progress = guided, progress  # guided: the server takes vLLM's guided_* fields
        self.identity = {"endpoint": url, "model": model, "guided": guided}

    def _post(self, client, body: dict) -> dict:
        import httpx

        last = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random() / 2))
            try:
                r = client.post(self.url, json=body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code in self.RETRY_STATUS:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                raise LmlabError(f"judge endpoint {self.url} refused the request: HTTP {r.status_code}: {r.text[:300]}")
            try:
                return r.json()
            except ValueError:
                last = f"not JSON: {r.text[:200]}"
        raise LmlabError(f"judge endpoint {self.url} failed after {self.retries} tries: {last}")

    def _map(self, items, body: Callable[[dict], dict], read: Callable[[dict], object], done) -> None:
        import httpx
        from concurrent.futures import ThreadPoolExecutor, as_completed
        from tqdm import tqdm

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        errors = []
        with httpx.Client(timeout=self.timeout, headers=headers) as client, \
                ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._post, client, {"model": self.model, **body(it)}): j
                       for j, it in enumerate(items)}
            bar = tqdm(total=len(items), desc="judge", unit="req", disable=not self.progress or len(items) < 2)
            for f in as_completed(futures):
                try:
                    value = read(f.result())
                except (LmlabError, KeyError, IndexError, TypeError) as e:
                    errors.append(e)
                else:
                    done(futures[f], value)  # cached at once: survives a later failure
                bar.update(1)
            bar.close()
        if errors:
            first = errors[0]
            msg = str(first) if isinstance(first, LmlabError) else f"unexpected response shape ({first!r})"
            raise LmlabError(f"{msg} ({len(errors)} of {len(items)} requests failed; "
                             f"{len(items) - len(errors)} finished answers are kept in the cache)")

    def _complete(self, items, done):
        def body(it):
            b = {"messages": it["messages"], "max_tokens": it["max_tokens"], "temperature": it["temperature"]}
            if it["seed"] is not None:
                b["seed"] = it["seed"]
            if self.guided:
                b.update(constraint_params(it["choice"], it["regex"], {"guided_choice", "guided_regex"}))
            return b
        self._map(items, body, lambda r: r["choices"][0]["message"]["content"] or "", done)

    def _top_logprobs(self, items, done):
        def read(r):
            content = r["choices"][0]["logprobs"]["content"]
            return {t["token"]: t["logprob"] for t in content[0]["top_logprobs"]} if content else {}
        self._map(items, lambda it: {"messages": it["messages"], "max_tokens": 1, "temperature": 0,
                                     "logprobs": True, "top_logprobs": it["k"]}, read, done)


def backend_from(model: str | None = None, url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 cache: str | Path | None = "default", **kw) -> Backend:
    """The backend a CLI names: `--judge-model PATH|smollm2` (local) or `--judge-url URL
    --judge-model NAME` (endpoint). `model` may also be an `lm` object already loaded.
    cache: a path, "default" ($LMLAB_HOME/cache/judge.sqlite) or None (no cache)."""
    cache = default_cache_path() if cache == "default" else cache
    if url:
        if not model or not isinstance(model, str):
            raise LmlabError("--judge-url needs --judge-model NAME (the model name the endpoint serves)")
        return EndpointBackend(url, model, api_key_env=api_key_env, cache=cache, **kw)
    if model is not None and not isinstance(model, str):
        return LocalBackend(model, cache=cache, **kw)
    from lmlab.lm import load

    return LocalBackend(load(model, workload="many-streams"), cache=cache, **kw)
