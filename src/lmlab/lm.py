"""The public handle on a model: `lmlab.load(...)` returns an LM with `generate` and `chat`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lmlab.engine.engine import Engine
from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError
from lmlab.model.io.hf import load_model
from lmlab.model.io.resolve import resolve
from lmlab.tokenizer import Tokenizer


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # generated ids only
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # generation time, model loading excluded
    incomplete: bool = False  # a constrained output (guided_*) cut off before its grammar was complete

    def to_dict(self) -> dict:
        return asdict(self)


class LM:
    def __init__(self, model, tokenizer: Tokenizer, folder: Path | None = None, compile: bool = False,
                 speedups=None):
        self.model, self.tokenizer, self.folder = model, tokenizer, folder
        self.config = model.config
        self.stop_token_ids = self._stop_ids()
        self.compile, self.speedups = compile, speedups
        self.engine = self.new_engine()

    def new_engine(self, **kw) -> Engine:
        """An engine over this model with the speed-ups it was loaded with (kw: Engine's options)."""
        s = self.speedups
        extra = {} if s is None else {"compile_options": s.compile_options, "greedy_pick": s.greedy_pick}
        return Engine(self.model, self.tokenizer, self.stop_token_ids, compile=self.compile, **extra, **kw)

    @classmethod
    def load(cls, spec: str | None = None, weights: str = "auto", device: str = "cpu",
             compile: bool | None = None, workload: str = "one-stream") -> "LM":
        """weights: auto | fp32 | bf16 | int8 | w8a8 | int4 (see lmlab.model.quant); compile: torch.compile
        the decode step (faster tokens after a one-off compilation, cached on disk). "auto" and None
        take what lmlab.cpu.choice measured fastest on this CPU for `workload` (one-stream,
        many-streams or scoring)."""
        from lmlab.cpu import choose, optimize
        from lmlab.model.quant import check_format
        from lmlab.model.peft import apply_trained, base_of

        base = base_of(spec)  # a trained adapter folder: its base model, then the adapter on top
        if base and weights == "auto":
            weights = "fp32"  # adapters were trained on the fp32 base
        choice = choose(workload, device, weights, compile)
        weights, compile = choice.weights, choice.compile
        check_format(weights, device)
        folder = resolve(base or spec)
        model = load_model(folder, weights=weights).to(device)
        if base:
            apply_trained(model, spec)
        speedups = optimize(model, device, "decode", weights=weights, compile=compile, pack=not base)
        lm = cls(model, Tokenizer.from_folder(folder), folder, compile, speedups)
        lm.weights = weights
        return lm

    def _stop_ids(self) -> list[int]:
        """EOS ids from the model config, generation_config.json and the tokenizer, merged."""
        ids = set(self.config.eos_ids)
        gen = self.folder / "generation_config.json" if self.folder else None
        if gen is not None and gen.is_file():
            eos = json.loads(gen.read_text()).get("eos_token_id")
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    def prompt_ids(self, prompt: str | list[dict], system: str | None = None, raw: bool = False) -> list[int]:
        """Ids for a user prompt (chat template applied unless raw) or a list of chat messages."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise LmlabError("empty prompt: give some text to respond to")
            if raw:
                return self.tokenizer.encode(prompt)
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
        else:
            messages = prompt
            if not messages:
                raise LmlabError("empty conversation: give at least one message")
        return self.tokenizer.encode_chat(messages)

    def generate(self, prompt: str | list[dict], *, system: str | None = None, raw: bool = False,
                 max_new_tokens: int = 256, temperature: float = 0.7,
                 stream: Callable[[str], None] | None = None, **params) -> Completion:
        """Answer one prompt. `stream(text_piece)` receives the text as it is produced; other
        keywords are SamplingParams (top_k, top_p, min_p, seed, stop, repetition_penalty, ...),
        constraints included (guided_json, guided_regex, guided_choice, guided_grammar, ...)."""
        ids = self.prompt_ids(prompt, system, raw)
        sp = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, **params)
        on_delta = (lambda d: d.text and stream(d.text)) if stream else None
        t0 = time.perf_counter()
        out = self.engine.complete(ids, sp, on_delta).outputs[0]
        seconds = time.perf_counter() - t0
        return Completion(out.text, out.token_ids, out.finish_reason, len(ids), len(out.token_ids), seconds,
                          out.incomplete)

    def beam_search(self, prompt: str | list[dict], *, system: str | None = None, raw: bool = False,
                    num_beams: int = 4, max_new_tokens: int = 256, **params) -> Completion:
        """The best beam for one prompt (lmlab.engine.beam; other keywords are BeamParams:
        length_penalty, early_stopping). Output constraints (guided_*) are refused by name."""
        from lmlab.engine.beam import BeamParams, beam_search

        bp = BeamParams(num_beams=num_beams, max_tokens=max_new_tokens, stop_token_ids=self.stop_token_ids, **params)
        ids = self.prompt_ids(prompt, system, raw)
        t0 = time.perf_counter()
        best = beam_search(self.model, ids, bp)[0]
        seconds = time.perf_counter() - t0
        return Completion(self.tokenizer.decode(best.token_ids), best.token_ids, best.finish_reason, len(ids),
                          len(best.token_ids), seconds)


def auto_formats(device: str = "cpu") -> dict[str, str]:
    """What `weights="auto"` loads here, per workload, and why (for `lmlab models info`)."""
    from lmlab.cpu import WORKLOADS, choose

    return {f"auto ({w})": f"{c.weights}{' compiled' if c.compile else ''}: {c.why}"
            for w in WORKLOADS for c in [choose(w, device)]}


def load(spec: str | None = None, weights: str = "auto", device: str = "cpu", compile: bool | None = None,
         workload: str = "one-stream") -> LM:
    """Load a model by bundled name, HF folder, .gguf file or hub id (default: bundled SmolLM2)."""
    return LM.load(spec, weights, device, compile, workload)
