"""Magpie (Xu et al., 2024): an aligned model writes the user turn itself.

Given only its chat template up to where a user message begins (the pre-query template), the
model continues with a plausible user query, ending it with its end-of-turn token; the query is
then answered in the usual way. No seed data and no prompt engineering: what the model learned
to expect from users is what comes out.
"""

from __future__ import annotations

from lmlab.errors import LmlabError
from lmlab.synth import filters
from lmlab.synth.novelty import NoveltyFilter
from lmlab.synth.records import Output

_SENTINEL = "\x00MAGPIE\x00"


def pre_query_template(tokenizer, system: str | None = None) -> str:
    """The chat template's text up to where the user's message starts (system turn included when
    the template adds one by default or `system` is given)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    if _SENTINEL not in text:
        raise LmlabError("the chat template does not place the user's message in its text; Magpie needs it")
    return text.split(_SENTINEL)[0]


def generate(teacher, n: int, out: Output, *, batch: int = 16, seed: int = 0, threshold: float = 0.7,
             system: str | None = None, max_query_tokens: int = 96, max_tokens: int = 256,
             progress: bool = True) -> dict:
    from tqdm import tqdm

    lm = teacher.lm
    if lm is None:
        raise LmlabError("magpie needs the teacher's chat template: give a model lmlab loads (not an endpoint)")
    template = pre_query_template(lm.tokenizer, system)
    novelty = NoveltyFilter(threshold)
    for r in out.records:
        novelty.add(r["instruction"])
    dropped: dict[str, int] = dict(out.state.get("dropped", {}))
    tried = out.state.get("generated", 0)
    bar = tqdm(total=n, initial=len(out.records), desc="magpie", unit="rec", disable=not progress)
    stalled = 0
    while len(out.records) < n:
        rnd = out.state["round"]
        seeds = [seed * 100003 + rnd * batch + j for j in range(batch)]
        queries = [" ".join(q.split()) for q in
                   teacher.continue_text([template] * batch, max_query_tokens, temperature=1.0, seeds=seeds,
                                         stop_at_end_of_turn=True)]
        tried += batch
        fresh = filters.screen(queries, novelty, dropped)
        if fresh:
            conv = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
                    for q in fresh]
            answers = teacher.chat(conv, max_tokens=max_tokens, temperature=0.0)
            for q, a in zip(fresh, answers):
                if not a.strip():
                    dropped["empty answer"] = dropped.get("empty answer", 0) + 1
                elif len(out.records) < n:
                    out.write({"instruction": q, "input": "", "output": a.strip(), "source": "magpie"})
                    bar.update(1)
        stalled = 0 if fresh else stalled + 1
        out.end_round(generated=tried, dropped=dropped)
        if stalled >= 50:
            raise LmlabError(f"magpie: 50 rounds in a row gave nothing new ({dropped})")
    bar.close()
    return {"generated": tried, "kept": len(out.records), **{f"dropped: {k}": v for k, v in sorted(dropped.items())}}
