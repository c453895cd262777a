"""Structured output: what the grammar mask costs, llama.cpp's JSON-schema grammar beside it, and
how often each remedy gives valid JSON, on the schemas of tests/engine/json_schemas.py.

* speed: lmlab greedy with the mask (guided_json) vs without it (the same prompts, the same
  number of tokens: ignore_eos, max_tokens = what the constrained row produced), at 1 stream (each
  schema alone, one after the other) and at 32 streams (the schemas cycled, one batch); the mask's
  share of the constrained decode time (constrained.mask_logits and the grammar advance, timed
  inside the run). Goals: <= 10% at 1 stream, <= 20% at 32.
* llama.cpp (llama-cpp-python, `LlamaGrammar.from_json_schema`) on the bundled GGUF, the same
  schemas and prompts, 1 stream: tok/s constrained (goal: lmlab constrained >= llama.cpp) and
  valid share. Skipped with a note when llama_cpp is not installed.
* valid share (parsed, then validated with jsonschema), all greedy, the same prompts (each shows
  its schema): prompt only (the text as written, no json-repair), prompt + json-repair, prompt +
  repair (json-repair, then up to --repair regenerations with the error fed back: lmlab.structured),
  constrained (goal 1.0), and llama.cpp's grammar.

    .venv/bin/python benchmarks/structured.py --quick       # 6 schemas, 8 streams
    .venv/bin/python benchmarks/structured.py --json benchmarks/results/structured.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_schemas():
    spec = importlib.util.spec_from_file_location("json_schemas", ROOT / "tests" / "engine" / "json_schemas.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SCHEMAS, mod.prompt


class MaskTimer:
    """Seconds spent in the constraint code of the engine (mask + advance), by wrapping the two
    entry points for the length of a run."""

    def __init__(self):
        from lmlab.engine import constrained
        self.mod, self.seconds = constrained, 0.0
        self.saved = (constrained.mask_logits, constrained.LLGuidanceConstraint.advance)

    def __enter__(self):
        mask, advance = self.saved

        def timed_mask(*a, **k):
            t = time.perf_counter()
            try:
                return mask(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t

        def timed_advance(c, token):
            t = time.perf_counter()
            try:
                return advance(c, token)
            finally:
                self.seconds += time.perf_counter() - t

        self.mod.mask_logits, self.mod.LLGuidanceConstraint.advance = timed_mask, timed_advance
        return self

    def __exit__(self, *exc):
        self.mod.mask_logits, self.mod.LLGuidanceConstraint.advance = self.saved


def speed(lm, cases, streams: int, max_tokens: int) -> dict:
    """Constrained then unconstrained greedy. 1 stream: each case alone, one after the other (as
    llama.cpp runs them); more: `streams` rows at once (cases cycled)."""
    from lmlab.engine.params import SamplingParams

    rows = [cases[i % len(cases)] for i in range(streams)] if streams > 1 else cases
    ids = [lm.prompt_ids(p) for p, _ in rows]
    groups = [[i] for i in range(len(rows))] if streams == 1 else [list(range(len(rows)))]
    lm.engine.generate(ids[:1], SamplingParams(max_tokens=2, temperature=0))  # warm-up
    counts, guided_s = [0] * len(rows), 0.0
    with MaskTimer() as timer:
        for g in groups:
            t = time.perf_counter()
            outs = lm.engine.generate([ids[i] for i in g], [SamplingParams(max_tokens=max_tokens, temperature=0,
                                                                            guided_json=rows[i][1]) for i in g])
            guided_s += time.perf_counter() - t
            for i, o in zip(g, outs):
                counts[i] = len(o.outputs[0].token_ids)
    free_s, free_tokens = 0.0, 0
    for g in groups:  # the same prompts, the same number of tokens each
        t = time.perf_counter()
        outs = lm.engine.generate([ids[i] for i in g], [SamplingParams(max_tokens=max(counts[i], 1), temperature=0,
                                                                        ignore_eos=True) for i in g])
        free_s += time.perf_counter() - t
        free_tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    return {"streams": streams, "tokens": sum(counts), "constrained_tok_s": sum(counts) / guided_s,
            "unconstrained_tok_s": free_tokens / free_s, "mask_share": timer.seconds / guided_s}


def llama_cpp_run(cases, max_tokens: int) -> dict | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    import jsonschema

    from lmlab.model.io.resolve import bundled_gguf

    llm = llama_cpp.Llama(model_path=str(bundled_gguf("smollm2")), n_ctx=2048, n_threads=2, verbose=False)
    tokens, seconds, valid = 0, 0.0, 0
    for p, schema in cases:
        grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        t = time.perf_counter()
        out = llm.create_chat_completion([{"role": "user", "content": p}], grammar=grammar, max_tokens=max_tokens,
                                         temperature=0.0, top_k=1)
        seconds += time.perf_counter() - t
        tokens += out["usage"]["completion_tokens"]
        try:
            jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), schema)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    return {"tok_s": tokens / seconds, "valid": valid / len(cases), "valid_count": valid}


def validity(lm, cases, max_tokens: int, repair: int) -> list[dict]:
    """Valid shares, all greedy. One unconstrained run with `repair` rounds gives the first three
    rows: its first attempt read strictly (prompt only), the same attempt after json-repair, and
    the end of the run (json-repair, then regenerations with the error fed back)."""
    from lmlab import structured

    specs = [structured.Spec(json_schema=s) for _, s in cases]
    prompts = [p for p, _ in cases]
    # the prompt already shows the schema; hint=False keeps the prompts of both runs identical
    free = structured.generate_batch(lm, prompts, specs, hint=False, max_new_tokens=max_tokens, constrained=False,
                                     repair=repair)
    strict = 0
    for r, (_, schema) in zip(free, cases):
        value, why, repaired = structured.parse_json(r.attempts[0].text)
        strict += why is None and not repaired and structured.validate(value, schema) is None
    guided = structured.generate_batch(lm, prompts, specs, hint=False, max_new_tokens=max_tokens, constrained=True)
    n = len(cases)

    def row(method, valid, attempts):
        return {"method": method, "valid": f"{valid}/{n}", "valid share": valid / n, "mean attempts": attempts}

    return [row("prompt only", strict, 1.0),
            row("prompt + json-repair", sum(r.attempts[0].error is None for r in free), 1.0),
            row(f"prompt + repair (json-repair, {repair} regenerations)", sum(r.ok for r in free),
                sum(len(r.attempts) for r in free) / n),
            row("constrained (guided_json)", sum(r.ok for r in guided), 1.0)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 schemas, 8 streams: a check that it runs")
    ap.add_argument("--schemas", type=int, default=None, help="how many of the schemas (default all; quick 6)")
    ap.add_argument("--streams", type=int, default=None, help="the many-streams run (default 32; quick 8)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repair", type=int, default=2, help="regenerations with the error fed back (prompt + repair)")
    ap.add_argument("--weights", default="fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    import torch

    from lmlab.lm import load
    from lmlab.report.table import print_table

    if args.threads:
        torch.set_num_threads(args.threads)
    schemas, prompt = load_schemas()
    k = args.schemas or (6 if args.quick else len(schemas))
    cases = [(prompt(w, s), s) for w, s in schemas[:k]]
    many = args.streams or (8 if args.quick else 32)
    lm = load(None, args.weights)

    rows = []
    for streams in (1, many):
        r = speed(lm, cases, streams, args.max_tokens)
        rows.append({"system": "lmlab", "streams": streams, "constrained tok/s": r["constrained_tok_s"],
                     "unconstrained tok/s": r["unconstrained_tok_s"],
                     "constrained / unconstrained": r["constrained_tok_s"] / r["unconstrained_tok_s"],
                     "mask share of decode": r["mask_share"], "goal": "<= 0.10" if streams == 1 else "<= 0.20"})
    ll = llama_cpp_run(cases, args.max_tokens)
    if ll is None:
        print("llama.cpp: llama_cpp (llama-cpp-python) is not installed; its column is skipped")
    else:
        one = rows[0]["constrained tok/s"]
        rows.append({"system": "llama.cpp (GGUF, JSON-schema grammar)", "streams": 1, "constrained tok/s": ll["tok_s"],
                     "constrained / unconstrained": None, "goal": f"lmlab/llama.cpp = {one / ll['tok_s']:.2f} >= 1"})
    print_table(rows, title=f"constrained decoding speed ({args.weights}, {k} schemas, max_tokens {args.max_tokens})")

    vrows = validity(lm, cases, args.max_tokens, args.repair)
    if ll is not None:
        vrows.append({"method": "llama.cpp JSON-schema grammar", "valid": f"{ll['valid_count']}/{k}",
                      "valid share": ll["valid"], "mean attempts": 1.0})
    print_table(vrows, title=f"valid outputs on {k} schemas (greedy, max_tokens {args.max_tokens}; "
                             "parsed and validated with jsonschema; goal constrained = 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_results.run(main))
