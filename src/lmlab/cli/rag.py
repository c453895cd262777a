"""`lmlab rag index|search|ask` and `lmlab agent`: argument parsing only; the work is done by
lmlab.rag and lmlab.agents."""

from __future__ import annotations

import json
import sys


def register(sub, common) -> None:
    r = sub.add_parser("rag", parents=[common], help="retrieval-augmented answers with citations")
    rsub = r.add_subparsers(dest="rag_command", metavar="ACTION", required=True)

    i = rsub.add_parser("index", parents=[common], help="index documents (text, Markdown, HTML, PDF text, JSONL)",
                        description="Build or update an index folder: new or changed documents are (re)indexed, "
                                    "documents gone from the inputs removed (--prune).")
    i.add_argument("docs", nargs="+", help="files or folders")
    i.add_argument("--out", required=True, help="index folder (updated in place when it holds one)")
    i.add_argument("--chunk-tokens", type=int, default=256, help="tokens per chunk (the model's tokenizer)")
    i.add_argument("--overlap", type=int, default=32, help="tokens shared by consecutive chunks")
    i.add_argument("--id-field", default="id", help="the id field of JSONL records")
    i.add_argument("--text-field", default="text", help="the text field of JSONL records")
    i.add_argument("--tokenizer", default=None, help="model whose tokenizer counts tokens (default smollm2)")
    i.add_argument("--embedding", default=None,
                   help="all-MiniLM-L6-v2 (default) or a sentence-transformers folder")
    i.add_argument("--dense", default="flat", choices=["flat", "ivf", "hnsw", "none"],
                   help="faiss index kind; none = BM25 only")
    i.add_argument("--prune", default="inputs", choices=["inputs", "all", "none"],
                   help="documents gone from the inputs leave the index: inputs = those of the given files and "
                        "folders (default), all = every document not given now, none = keep everything")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_index)

    for name, helptext in (("search", "retrieve only"), ("ask", "answer with [n] citations")):
        p = rsub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("question")
        p.add_argument("--index", required=True, help="index folder")
        p.add_argument("--k", type=int, default=5)
        p.add_argument("--mode", default="hybrid", choices=["bm25", "dense", "hybrid"])
        p.add_argument("--rerank", action="store_true", help="re-order the candidates by exact cosine")
        p.add_argument("--embedding", default=None, help="must be the index's model (checked)")
        p.add_argument("--json", action="store_true")
        if name == "ask":
            p.add_argument("--model", "-m", default=None,
                           help="bundled name (default smollm2), HF folder, .gguf file or hub id org/name")
            p.add_argument("--max-new-tokens", type=int, default=160)
            p.add_argument("--min-similarity", type=float, default=0.25,
                           help="abstain when no passage's cosine reaches this")
        p.set_defaults(func=cmd_search if name == "search" else cmd_ask)

    a = sub.add_parser("agent", parents=[common], help="a tool-using agent (ReAct loop), every step traced")
    a.add_argument("task")
    a.add_argument("--tools", default="calculator,python", help="comma-separated: calculator, python, search, sql")
    a.add_argument("--index", default=None, help="index folder for the search tool")
    a.add_argument("--db", default=None, help="SQLite file for the sql tool (opened read-only)")
    a.add_argument("--max-steps", type=int, default=8, help="model turns before the loop stops")
    a.add_argument("--max-new-tokens", type=int, default=384)
    a.add_argument("--model", "-m", default=None)
    a.add_argument("--endpoint", default=None,
                   help="an OpenAI-compatible server's /v1 URL (e.g. lmlab serve): the tools go as OpenAI tools")
    a.add_argument("--api-key", default=None)
    a.add_argument("--trace", default=None, help="folder for trace.jsonl and transcript.txt")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_agent)


def cmd_index(args) -> int:
    from lmlab.rag import Index, IndexConfig

    config = IndexConfig(chunk_tokens=args.chunk_tokens, overlap=args.overlap, tokenizer=args.tokenizer,
                         embedding=args.embedding, dense=args.dense, id_field=args.id_field,
                         text_field=args.text_field)
    _, report = Index.build(args.docs, args.out, config, progress=not args.json, prune=args.prune)
    if args.json:
        print(json.dumps({"added": report.added, "changed": report.changed, "removed": report.removed,
                          "unchanged": report.unchanged, "kept": report.kept,
                          "chunks": report.chunks, "embedded": report.embedded, "seconds": report.seconds,
                          "skipped": [{"path": p, "why": w} for p, w in report.skipped]}))
    else:
        print(f"{args.out}: {report.summary()}")
    return 0


def _rerank(args):
    return "dense" if args.rerank else None


def cmd_search(args) -> int:
    from lmlab.rag import Index, retrieve

    index = Index.load(args.index, embedding=args.embedding)
    hits = retrieve(index, args.question, args.k, args.mode, rerank=_rerank(args))
    if args.json:
        print(json.dumps([{**h.to_dict(), "text": h.chunk.text} for h in hits], ensure_ascii=False))
        return 0
    for n, h in enumerate(hits, 1):
        print(f"{n}. {h.doc_id}  {h.score:.4f}\n   {h.chunk.text[:300]!r}")
    return 0


def cmd_ask(args) -> int:
    from lmlab.lm import load
    from lmlab.rag import Index, ask

    index = Index.load(args.index, embedding=args.embedding)
    lm = load(args.model)
    out = ask(lm, args.question, index, args.k, args.mode, min_similarity=args.min_similarity,
              max_new_tokens=args.max_new_tokens, rerank=_rerank(args))
    if args.json:
        print(json.dumps(out.to_dict(), ensure_ascii=False))
        return 0
    print(out.answer)
    for c in out.citations:
        print(f"\n[{c['n']}] {c['doc_id']}\n{c['text']}")
    for note in out.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_agent(args) -> int:
    from lmlab.agents import Agent, lm_model, make_tools
    from lmlab.agents.react import endpoint_model

    tools = make_tools(args.tools, index=args.index, db=args.db)
    if args.endpoint:
        model = endpoint_model(args.endpoint, args.model or "smollm2", tools, args.api_key, args.max_new_tokens)
    else:
        from lmlab.lm import load
        model = lm_model(load(args.model), args.max_new_tokens)
    result = Agent(model, tools, args.max_steps, args.trace).run(args.task)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0 if result.finished else 1
    for s in result.steps:
        if s.kind == "tool" or s.kind == "error":
            print(f"[{s.step}] {s.kind} {s.tool}({json.dumps(s.arguments)}) -> {s.text[:300]}")
    print(result.answer if result.finished else f"(no answer: {result.steps[-1].text})")
    if args.trace:
        print(f"trace: {args.trace}/trace.jsonl, {args.trace}/transcript.txt", file=sys.stderr)
    return 0 if result.finished else 1
