"""The model that writes synthetic data: any model lmlab loads (batched through its engine) or any
OpenAI-compatible endpoint (concurrent requests), through the judge's backends, which also cache
every answer (a re-run after a kill pays nothing for what was already generated).

Two calls: `chat(conversations)` for turns in the chat template, and `continue_text(prompts)` for
raw continuations (Self-Instruct's task lists, Magpie's pre-query template), which an endpoint
serves through /v1/completions.
"""

from __future__ import annotations

from lmlab.errors import LmlabError
from lmlab.judge.backends import Backend, LocalBackend, backend_from


class Teacher:
    def __init__(self, backend: Backend):
        self.backend = backend

    @classmethod
    def from_spec(cls, model=None, url: str | None = None, cache="default", **kw) -> "Teacher":
        return cls(backend_from(model, url, cache=cache, **kw))

    @property
    def lm(self):
        return self.backend.lm if isinstance(self.backend, LocalBackend) else None

    def chat(self, conversations: list[list[dict]], max_tokens: int = 256, temperature: float = 0.7,
             seed: int | None = 0, choice: list[str] | None = None) -> list[str]:
        """One answer per conversation, batched; each request samples with its own generator
        seeded with `seed` (different conversations thus still get different draws)."""
        return self.backend.complete(conversations, max_tokens, temperature, choice=choice, seed=seed)

    def continue_text(self, prompts: list[str], max_tokens: int = 128, temperature: float = 0.7,
                      seeds: list[int] | None = None, stop: list[str] | None = None,
                      stop_at_end_of_turn: bool = False) -> list[str]:
        """Raw continuations of `prompts` (no chat template added)."""
        lm = self.lm
        if lm is None:
            return self._endpoint_completions(prompts, max_tokens, temperature, seeds, stop)
        from lmlab.engine.params import SamplingParams

        ids = [lm.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        params = [SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=None if seeds is None else s,
                                 stop=list(stop or []), stop_token_ids=list(lm.stop_token_ids) if stop_at_end_of_turn
                                 else [], ignore_eos=not stop_at_end_of_turn)
                  for s in (seeds or [None] * len(prompts))]
        step = getattr(self.backend, "max_batch", None) or len(ids) or 1  # max_batch=1: one request at a time
        outs = [o for b in range(0, len(ids), step) for o in lm.engine.generate(ids[b:b + step], params[b:b + step])]
        for o in outs:
            if o.error:
                raise LmlabError(f"the teacher failed on a request: {o.error}")
        return [o.outputs[0].text for o in outs]

    def _endpoint_completions(self, prompts, max_tokens, temperature, seeds, stop) -> list[str]:
        import copy

        b = copy.copy(self.backend)  # the same endpoint, retries and client settings, on /completions
        b.url = b.url.replace("/chat/completions", "/completions")
        items = [{"prompt": p, "max_tokens": max_tokens, "temperature": temperature,
                  **({"stop": stop} if stop else {}), **({} if seeds is None else {"seed": seeds[i]})}
                 for i, p in enumerate(prompts)]
        out: list[str | None] = [None] * len(items)
        b._map(items, dict, lambda r: r["choices"][0]["text"], lambda j, v: out.__setitem__(j, v))
        return out  # type: ignore[return-value]
