"""`lmlab bench decode`: tokens/s, time to first token and peak memory of the engine."""

from __future__ import annotations

import resource
import time

from lmlab.engine.params import SamplingParams


def synthetic_prompt(tokenizer, n_tokens: int, variant: int | None = None) -> list[int]:
    """A chat prompt of exactly n_tokens ids (a real user turn, cut or repeated to length);
    `variant` i starts the user turn with "Question i:", so that prompts differ after the chat
    template's shared system turn."""
    text = ("Explain, step by step and with examples, how a transformer language model turns a "
            "prompt into an answer, and what each decoding setting changes. ")
    head = "" if variant is None else f"Question {variant}: "
    ids = tokenizer.encode_chat([{"role": "user", "content": head + text * (1 + n_tokens // 20)}])
    return ids[:n_tokens] if len(ids) >= n_tokens else ids + ids[-1:] * (n_tokens - len(ids))


def bench_decode(lm, streams: int = 1, prompt_tokens: int = 40, new_tokens: int = 128,
                 warmup: bool = True, distinct: bool = False) -> dict:
    """Run `streams` concurrent greedy requests of `new_tokens` each (EOS ignored), on one prompt
    or (`distinct`) on a different prompt each: the engine prefills identical prompts once."""
    prompts = [synthetic_prompt(lm.tokenizer, prompt_tokens, i if distinct else None) for i in range(streams)]
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    engine = lm.engine
    t0 = time.perf_counter()
    if warmup:  # as many streams as timed: a compiled decode step is then ready for that batch
        engine.generate(prompts, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    warmup_s = time.perf_counter() - t0
    first: dict[str, float] = {}
    t0 = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, params, request_id=f"bench-{i}",
                           on_delta=lambda d: first.setdefault(d.request_id, time.perf_counter()))
    generated = 0
    while engine.has_unfinished():
        for out in engine.step():
            generated += sum(len(c.token_ids) for c in out.outputs)
    end = time.perf_counter()
    seconds = end - t0
    # the decode phase alone, as llama.cpp reports it: tokens after each stream's first, over the
    # time after the last stream's first
    decode_s = end - max(first.values()) if first else 0.0
    return {"streams": streams, "distinct_prompts": distinct, "tok_s": generated / seconds,
            "decode_tok_s": (generated - streams) / decode_s if decode_s > 0 else None,
            "ttft_s": sum(first.values()) / len(first) - t0 if first else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "seconds": seconds, "warmup_s": warmup_s}
