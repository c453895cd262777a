"""Per-request decoding parameters, with vLLM's names and semantics.

Processors apply in this order to the model's logits for each sequence:
  1. min_tokens: EOS and stop ids masked until `min_tokens` tokens exist
  2. repetition_penalty (CTRL: over prompt and output, l/r if l > 0 else l*r)
  3. presence_penalty and frequency_penalty (OpenAI: over the output only)
  4. logit_bias
  5. temperature (0 = greedy: the argmax of the logits after steps 1-4)
  6. top_k, 7. top_p, 8. min_p, 9. typical_p
  10. sample (one torch.Generator per sequence when `seed` is set)
  11. watermark: delta added to the green list seeded by the previous token, after step 5-9's
      warpers as transformers applies it, before sampling (lmlab.safety.watermark)
A row whose processed logits are not usable (NaN, +inf, or nothing left to sample) fails its own
request with finish_reason "error"; the other rows of the step go on (engine._choose).
Reported log-probs are the model's own (log-softmax of the raw logits), as vLLM reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmlab.errors import LmlabError

MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2  # vLLM's smallest temperature; 0 means greedy
MIN_PENALTY, MAX_PENALTY = 1e-2, 1e2


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0  # 0 or -1 = off
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    seed: int | None = None
    n: int = 1
    best_of: int | None = None  # sample this many, return the best n (by cumulative log-prob or a scorer)
    logprobs: int | None = None  # top-k log-probs per generated token (the chosen one always included)
    prompt_logprobs: int | None = None  # one entry per prompt token (None for the first)
    watermark: object = None  # a safety.watermark.Watermark, or a dict / "gamma=..,delta=.." string for one

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.top_k == -1:
            self.top_k = 0
        if self.watermark is not None:
            from lmlab.safety.watermark import parse
            self.watermark = parse(self.watermark)
        _check(self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}")
        # Bounds keep float32 finite: logits / 1e-45 overflow to inf and softmax gives NaN.
        _check(self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        _check(self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE,
               f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {self.temperature}")
        _check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, f"top_k must be >= 1, or 0 / -1 for off, got {self.top_k}")
        _check(0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}")
        _check(0 < self.typical_p <= 1, f"typical_p must be in (0, 1], got {self.typical_p}")
        _check(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        _check(MIN_PENALTY <= self.repetition_penalty <= MAX_PENALTY,
               f"repetition_penalty must be in [{MIN_PENALTY}, {MAX_PENALTY}], got {self.repetition_penalty}")
        _check(-2 <= self.presence_penalty <= 2, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")
        _check(-2 <= self.frequency_penalty <= 2,
               f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}")
        _check(0 <= self.min_tokens <= self.max_tokens,
               f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}")
        _check(self.n >= 1, f"n must be >= 1, got {self.n}")
        _check(self.best_of is None or self.best_of >= self.n,
               f"best_of must be >= n={self.n}, got {self.best_of}")
        _check(self.logprobs is None or 0 <= self.logprobs <= 20, f"logprobs must be in [0, 20], got {self.logprobs}")
        _check(self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= 20,
               f"prompt_logprobs must be in [0, 20], got {self.prompt_logprobs}")
        _check(isinstance(self.stop, (list, tuple)) and all(isinstance(s, str) and s for s in self.stop),
               f"stop must be a string or a list of non-empty strings, got {self.stop!r}")
        _check(isinstance(self.stop_token_ids, (list, tuple)) and all(isinstance(t, int) for t in self.stop_token_ids),
               f"stop_token_ids must be a list of ints, got {self.stop_token_ids!r}")
        _check(isinstance(self.logit_bias, dict),
               f"logit_bias must be a dict {{token id: bias}}, got {self.logit_bias!r}")
        self.stop, self.stop_token_ids = list(self.stop), list(self.stop_token_ids)
        self.logit_bias = {int(k): float(v) for k, v in self.logit_bias.items()}
        _check(all(-100 <= v <= 100 or v == float("-inf") for v in self.logit_bias.values()),
               f"logit_bias values must be in [-100, 100] (OpenAI's range) or -inf (a ban), got {self.logit_bias!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def samples(self) -> int:
        return self.best_of or self.n


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LmlabError(message)
