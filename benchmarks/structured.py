"""Structured output: what the grammar mask costs, llama.cpp's JSON-schema grammar beside it, and
how often each remedy gives valid JSON, on the schemas of tests/engine/json_schemas.py.

* speed: lmlab greedy with the mask (guided_json) vs without it (the same prompts, the same
  number of tokens: ignore_eos, max_tokens = what the constrained row produced), at 1 stream and
  at 32 streams; the mask's share of the constrained decode time (constrained.mask_logits and the
  grammar advance, timed inside the run). Goals: <= 10% at 1 stream, <= 20% at 32.
* llama.cpp (llama-cpp-python, `LlamaGrammar.from_json_schema`) on the bundled GGUF, the same
  schemas and prompts, 1 stream: tok/s constrained (goal: lmlab constrained >= llama.cpp) and
  valid share. Skipped with a note when llama_cpp is not installed.
* valid share: prompt only, prompt + repair (json-repair, then 2 regenerations with the error fed
  back), constrained; all greedy.

    .venv/bin/python benchmarks/structured.py --quick       # 8 schemas, 16 streams
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
    """Constrained then unconstrained greedy over `streams` rows at once (cases cycled)."""
    from lmlab.engine.params import SamplingParams

    rows = [cases[i % len(cases)] for i in range(streams)]
    ids = [lm.prompt_ids(p) for p, _ in rows]
    lm.engine.generate(ids[:1], SamplingParams(max_tokens=2, temperature=0))  # warm-up
    with MaskTimer() as timer:
        t = time.perf_counter()
        outs = lm.engine.generate(ids, [SamplingParams(max_tokens=max_tokens, temperature=0, guided_json=s)
                                        for _, s in rows])
        guided_s = time.perf_counter() - t
    counts = [len(o.outputs[0].token_ids) for o in outs]
    t = time.perf_counter()
    free = lm.engine.generate(ids, [SamplingParams(max_tokens=max(n, 1), temperature=0, ignore_eos=True)
                                    for n in counts])
    free_s = time.perf_counter() - t
    free_tokens = sum(len(o.outputs[0].token_ids) for o in free)
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
    return {"tok_s": tokens / seconds, "valid": valid / len(cases)}


def validity(lm, cases, max_tokens: int) -> dict:
    from lmlab import structured

    specs = [structured.Spec(json_schema=s) for _, s in cases]
    prompts = [p for p, _ in cases]
    share = {}
    for name, kw in [("prompt only", dict(constrained=False, repair=0)),
                     ("prompt + repair", dict(constrained=False, repair=2)),
                     ("constrained", dict(constrained=True, repair=0))]:
        # the prompt already shows the schema; hint=False keeps the three prompts identical
        rs = structured.generate_batch(lm, prompts, specs, hint=False, max_new_tokens=max_tokens, **kw)
        share[name] = sum(r.ok for r in rs) / len(rs)
    return share


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 schemas, 16 streams instead of 32")
    ap.add_argument("--schemas", type=int, default=None, help="how many of the schemas (default all; quick 8)")
    ap.add_argument("--streams", type=int, default=None, help="the many-streams run (default 32; quick 16)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--weights", default="fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    import torch

    from lmlab.lm import load
    from lmlab.report.table import print_table

    if args.threads:
        torch.set_num_threads(args.threads)
    schemas, prompt = load_schemas()
    k = args.schemas or (8 if args.quick else len(schemas))
    cases = [(prompt(w, s), s) for w, s in schemas[:k]]
    many = args.streams or (16 if args.quick else 32)
    lm = load(None, args.weights)

    rows = []
    for streams in (1, many):
        r = speed(lm, cases[:1] if streams == 1 else cases, streams, args.max_tokens)
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

    share = validity(lm, cases, args.max_tokens)
    vrows = [{"method": m, "valid share": v} for m, v in share.items()]
    if ll is not None:
        vrows.append({"method": "llama.cpp JSON-schema grammar", "valid share": ll["valid"]})
    print_table(vrows, title=f"valid outputs on {k} schemas (greedy, max_tokens {args.max_tokens}; goal constrained = 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_results.run(main))
