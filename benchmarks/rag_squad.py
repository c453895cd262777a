"""RAG on SQuAD 2.0 dev: retrieval recall@1/5/20 (BM25, dense, hybrid) over the Wikipedia
paragraphs the questions come from, then answer exact match / F1 and the unsupported-statement
rate, closed-book vs RAG, with the bundled model.

    .venv/bin/python benchmarks/rag_squad.py --limit 20           # recall on all 400, answers on 20
    .venv/bin/python benchmarks/rag_squad.py --limit 50 --judge model

Recall@k: the share of questions whose gold paragraph (context_id) is among the documents of the
top-k chunks. EM/F1: the SQuAD script's normalisation (lowercase, no punctuation or articles),
max over the gold answers, citation marks removed first. Unsupported-statement rate: the answer
split into statements, each judged against its evidence: a RAG statement against the passages it
cites (the retrieved ones when it cites none), a closed-book statement against the gold paragraph
(the source the question was written from). The judge is `lexical` (content-word coverage,
deterministic) or `model` (the same bundled model asked yes/no; weak at 135M parameters).
Abstentions have no statements; they are counted apart.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import string
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHORT = ("Reply with only the short answer (a few words, no sentence), followed by the number of the passage "
         "it comes from in brackets, e.g.: Paris [2]")
CLOSED = "Reply with only the short answer (a few words, no sentence)."
# Where the engine has constrained decoding, both settings are held to a short answer (the RAG one
# with its citation), so the comparison is of what the model knows, not of how much it writes.
SHORT_RE = r"[A-Za-z0-9$][^\[\]\n]{0,60}"
SHORT_CITED_RE = SHORT_RE + r" \[[1-9]\]"


def normalize(s: str) -> str:
    s = re.sub(r"\[\d+(?:\s*,\s*\d+)*\]", " ", s).lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1(pred: str, gold: str) -> float:
    p, g = normalize(pred).split(), normalize(gold).split()
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if not p or not g or common == 0:
        return float(p == g)
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=20, help="questions answered by the model (recall uses all)")
    ap.add_argument("--recall-limit", type=int, default=400)
    ap.add_argument("--index", default="/tmp/lmlab_rag_squad_index", help="index folder (built once, reused)")
    ap.add_argument("--k", type=int, default=3, help="passages given to the model")
    ap.add_argument("--mode", default="hybrid", choices=["bm25", "dense", "hybrid"])
    ap.add_argument("--judge", default="lexical", choices=["lexical", "model"])
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--free", action="store_true", help="no output constraint even where the engine has one")
    ap.add_argument("--model", default=None)
    ap.add_argument("--weights", default="fp32", help="fp32 | bf16 | int8 | w8a8 | int4")
    args = ap.parse_args()

    from lmlab.rag import Index, IndexConfig
    from lmlab.report.table import print_table

    questions = [json.loads(line) for line in open(DATA / "squad_dev_rag.jsonl")]
    gold_text = {r["context_id"]: r["text"] for r in map(json.loads, open(DATA / "squad_dev_passages.jsonl"))}
    t0 = time.perf_counter()
    index, report = Index.build([DATA / "squad_dev_passages.jsonl"], args.index, IndexConfig(id_field="context_id"),
                                progress=True)
    print(f"index: {report.summary()} ({time.perf_counter() - t0:.1f}s)")

    rows = []
    qs = questions[:args.recall_limit]
    vectors = index.embed_query([q["question"] for q in qs])
    for mode in ("bm25", "dense", "hybrid"):
        hits_at = {1: 0, 5: 0, 20: 0}
        t0 = time.perf_counter()
        for q, v in zip(qs, vectors):
            docs = [h.doc_id for h in _retrieve(index, q["question"], 20, mode, v)]
            for k in hits_at:
                hits_at[k] += q["context_id"] in docs[:k]
        rows.append({"retriever": mode, **{f"recall@{k}": n / len(qs) for k, n in hits_at.items()},
                     "ms/query": 1000 * (time.perf_counter() - t0) / len(qs)})
    print_table(rows, title=f"SQuAD 2.0 dev retrieval, {len(qs)} questions, {len(index)} chunks of "
                            f"{len(gold_text)} paragraphs")

    from lmlab.engine.params import SamplingParams
    from lmlab.lm import load
    from lmlab.rag import faithfulness, judge_entails, lexical_entails
    from lmlab.rag.answer import Answer, finish, prepare

    lm = load(args.model, args.weights)
    if args.judge == "model":
        entails = judge_entails(lambda m: lm.generate(m, max_new_tokens=3, temperature=0.0).text)
    else:
        entails = lexical_entails()
    sub = questions[:args.limit]
    rag_name = f"RAG ({args.mode}, k={args.k})"
    results = {"closed-book": [], rag_name: []}
    t0 = time.perf_counter()
    # every prompt of a setting in one engine batch: the same greedy answers, many times faster
    from lmlab.rag.answer import _has_guided_regex

    constrained = _has_guided_regex() and not args.free
    greedy = SamplingParams(max_tokens=args.max_new_tokens, temperature=0.0,
                            **({"guided_regex": SHORT_RE} if constrained else {}))
    closed = lm.engine.generate([lm.prompt_ids(q["question"], system=CLOSED) for q in sub], greedy, progress=True)
    for q, out in zip(sub, closed):
        results["closed-book"].append((q, out.outputs[0].text.strip(), {1: gold_text[q["context_id"]]}, False))
    preps = [prepare(q["question"], index, args.k, args.mode, tokenizer=lm.tokenizer, context=lm.config.max_seq_len,
                     max_new_tokens=args.max_new_tokens, instructions=SHORT,
                     constrained=SHORT_CITED_RE if constrained else False) for q in sub]
    todo = [i for i, p in enumerate(preps) if not isinstance(p, Answer)]
    outs = lm.engine.generate([lm.prompt_ids(preps[i].messages) for i in todo],
                              [SamplingParams(max_tokens=args.max_new_tokens, temperature=0.0, **preps[i].params)
                               for i in todo], progress=True)
    answers = list(preps)
    for i, out in zip(todo, outs):
        answers[i] = finish(preps[i], out.outputs[0].text)
    for q, out in zip(sub, answers):
        cited = {c["n"]: c["text"] for c in out.citations} or dict(enumerate(out.passages, 1))
        results[rag_name].append((q, out.answer, cited, out.abstained))
    seconds = time.perf_counter() - t0
    rows = []
    for name, items in results.items():
        em = sum(max(float(normalize(a) == normalize(g)) for g in q["answers"]) for q, a, _, _ in items)
        f = sum(max(f1(a, g) for g in q["answers"]) for q, a, _, _ in items)
        statements = unsupported = abstained = 0
        for q, a, evidence, abst in items:
            if abst:
                abstained += 1
                continue
            r = faithfulness(a, evidence, entails)
            statements += len(r["statements"])
            unsupported += r["unsupported"]
        rows.append({"setting": name, "EM": em / len(items), "F1": f / len(items),
                     "unsupported statements": f"{unsupported}/{statements}",
                     "unsupported rate": unsupported / statements if statements else 0.0,
                     "abstained": abstained})
    print_table(rows, title=f"SQuAD 2.0 dev answers, {len(sub)} questions, bundled model, judge={args.judge}, "
                            f"{'short-answer regex' if constrained else 'free text'} ({seconds:.0f}s)")
    for q, a, _, _ in results[rag_name][:3]:
        print(f"Q: {q['question']}\n  gold: {q['answers'][0]}\n  RAG: {a}")
    return 0


def _retrieve(index, question, k, mode, vector):
    """retrieve() with the question's vector computed once for all modes (same ranking)."""
    from lmlab.rag import retrieve

    embed = index.embed_query
    index.embed_query = lambda texts: vector.reshape(1, -1)
    try:
        return retrieve(index, question, k, mode)
    finally:
        index.embed_query = embed


if __name__ == "__main__":
    import _results

    sys.exit(_results.run(main))
