"""`lmlab generate` flags for structured output: --json-schema FILE | --regex R | --choice a,b,c |
--grammar FILE.lark [--repair N] [--prompt-only]. The work is lmlab.structured.generate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmlab.errors import LmlabError


def add_args(g: argparse.ArgumentParser) -> None:
    s = g.add_argument_group("structured output (constrained decoding; see lmlab.structured)")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--json-schema", metavar="FILE", help="a JSON schema file the output must satisfy")
    which.add_argument("--json-object", action="store_true", help="any JSON object")
    which.add_argument("--regex", metavar="R", help="a regular expression the whole output must match")
    which.add_argument("--choice", metavar="A,B,C", help="the output is one of these comma-separated strings")
    which.add_argument("--grammar", metavar="FILE", help="a Lark (or GBNF) grammar file")
    s.add_argument("--repair", type=int, default=0, metavar="N",
                   help="check the output and regenerate with the error fed back, up to N times")
    s.add_argument("--prompt-only", action="store_true",
                   help="no grammar mask: ask in the prompt, then parse, repair and validate")


def wanted(args) -> bool:
    return bool(args.json_schema or args.json_object or args.regex or args.choice or args.grammar)


def run(args, load) -> int:
    """The constraint is checked before `load()` reads the model."""
    from lmlab import structured

    spec = dict(json_schema=_read_json(args.json_schema) if args.json_schema else None,
                json_object=args.json_object, regex=args.regex,
                choice=[c.strip() for c in args.choice.split(",") if c.strip()] if args.choice else None,
                grammar=_read(args.grammar) if args.grammar else None)
    if args.raw:
        raise LmlabError("--raw does not combine with structured output (the check feeds errors back as chat turns)")
    structured.Spec(**spec)  # a bad schema, regex or grammar fails here, before the model loads
    lm = load()
    result = structured.generate(lm, args.prompt, **spec, constrained=not args.prompt_only, repair=args.repair,
                                 system=args.system, max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        is_json = spec["json_schema"] is not None or args.json_object
        print(json.dumps(result.value, ensure_ascii=False) if is_json and result.ok else result.text)
        for i, a in enumerate(result.attempts):
            if a.error:
                print(f"attempt {i + 1}: {a.error}", file=sys.stderr)
    return 0 if result.ok else 1


def _read(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise LmlabError(f"{path}: no such file")
    return p.read_text(encoding="utf-8")


def _read_json(path: str):
    text = _read(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LmlabError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
