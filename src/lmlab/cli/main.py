"""The `lmlab` command: argument parsing only; every command calls the Python API.

Heavy modules (torch, tokenizers) are imported inside the command functions so that
`lmlab --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys


AREAS = ("train", "eval", "scale", "data", "synth", "judge", "rag", "safety", "sql", "pipeline")  # the CLI modules of the stages beyond the core

def _sampling_args(p: argparse.ArgumentParser, temperature: float = 0.7) -> None:
    p.add_argument("--model", "-m", default=None,
                   help="bundled name (default smollm2), HF folder, .gguf file or hub id org/name")
    _engine_args(p)
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=None)


def _engine_args(p: argparse.ArgumentParser) -> None:
    from lmlab.model.formats import CHOICES, DEFAULT

    p.add_argument("--weights", default=DEFAULT, choices=CHOICES,
                   help=f"inference weight format (default {DEFAULT}: the fastest measured on this CPU kind; "
                        "`lmlab models info` says which)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step: faster, after a one-off compilation cached on disk "
                        "(default: as measured fastest on this CPU kind)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmlab", description="The whole life of a text foundation model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # --debug is accepted after the subcommand too; SUPPRESS keeps the top-level value otherwise.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    g = sub.add_parser("generate", parents=[common], help="answer one prompt (text streams to the terminal)")
    g.add_argument("prompt")
    _sampling_args(g)
    g.add_argument("--raw", action="store_true", help="no chat template: continue the text as is")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    g.add_argument("--watermark", nargs="?", const="", default=None, metavar="gamma=..,delta=..",
                   help="green-list watermark (default gamma=0.25,delta=2); `lmlab detect --watermark` finds it")
    g.add_argument("--beam", type=int, default=None, metavar="W",
                   help="beam search with W beams instead of sampling (deterministic; no sampling flags, "
                        "watermark or output constraint)")
    from lmlab.cli import structured as structured_cli
    structured_cli.add_args(g)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", parents=[common], help="interactive multi-turn chat (/help inside for commands)")
    _sampling_args(c)
    c.set_defaults(func=cmd_chat)

    d = sub.add_parser("decode", parents=[common], help="see decoding algorithms side by side")
    d.add_argument("prompt")
    d.add_argument("--model", "-m", default=None)
    _engine_args(d)
    mode = d.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compare", action="store_true",
                      help="greedy, beam search and sampling settings, side by side")
    mode.add_argument("--dist", action="store_true",
                      help="next-token distribution at T=0.5/1/1.5 and what top-k/top-p/min-p keep")
    d.add_argument("--raw", action="store_true", help="no chat template: continue the text as is")
    d.add_argument("--max-new-tokens", type=int, default=48)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--png", default="decode_dist.png", help="where --dist writes its plot")
    d.set_defaults(func=cmd_decode)

    b = sub.add_parser("bench", parents=[common], help="measure speed")
    bsub = b.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    bd = bsub.add_parser("decode", parents=[common], help="tokens/s, time to first token, peak RSS")
    bd.add_argument("--model", "-m", default=None)
    _engine_args(bd)
    bd.add_argument("--streams", type=int, default=1, help="concurrent requests")
    bd.add_argument("--distinct-prompts", action="store_true",
                    help="a different prompt per stream (by default all streams share one, prefilled once)")
    bd.add_argument("--prompt-tokens", type=int, default=40)
    bd.add_argument("--new-tokens", type=int, default=128)
    bd.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: one per core; 1 is faster when other jobs keep the cores busy)")
    bd.add_argument("--json", action="store_true")
    bd.set_defaults(func=cmd_bench_decode)

    m = sub.add_parser("models", parents=[common], help="list, inspect and convert models")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ml = msub.add_parser("list", parents=[common], help="bundled models and cached conversions")
    ml.set_defaults(func=cmd_models_list)
    mi = msub.add_parser("info", parents=[common], help="architecture, size, tokenizer and files of a model")
    mi.add_argument("model", nargs="?", default=None)
    mi.add_argument("--json", action="store_true")
    mi.set_defaults(func=cmd_models_info)
    mc = msub.add_parser("convert", parents=[common], help="convert a model (GGUF, folder, hub id) to an HF folder")
    mc.add_argument("model", nargs="?", default=None)
    mc.add_argument("--out", default=None, help="output folder (default: the lmlab cache)")
    mc.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="storage dtype of the written safetensors")
    mc.set_defaults(func=cmd_models_convert)
    from lmlab.config import add_flags
    from lmlab.serve.config import ServeConfig

    s = sub.add_parser("serve", parents=[common],
                       help="OpenAI-compatible HTTP server and web chat (needs fastapi, uvicorn)",
                       description="Flags, a --config YAML file and key=value overrides all set ServeConfig's "
                                   "fields (lmlab/serve/config.py).")
    add_flags(s, ServeConfig)
    s.set_defaults(func=cmd_serve)

    # Later stages own their CLI modules (lmlab.cli.<area>); each adds its subcommands here.
    import importlib

    for area in AREAS:
        importlib.import_module(f"lmlab.cli.{area}").register(sub, common)
    return parser


# ---- commands -----------------------------------------------------------------------------------

def cmd_generate(args) -> int:
    from lmlab.cli import structured as structured_cli
    from lmlab.errors import LmlabError
    from lmlab.lm import load

    if args.beam is not None:
        return _generate_beam(args)
    extra = {}
    if args.watermark is not None:
        from lmlab.safety.watermark import parse
        extra["watermark"] = parse(args.watermark)  # checked before the model loads
    if structured_cli.wanted(args):
        if extra:
            raise LmlabError("--watermark with a constraint (--json-schema, --regex, --choice, --grammar) "
                             "is not supported from the command line; use the Python API's SamplingParams")
        return structured_cli.run(args, lambda: load(args.model, args.weights, compile=args.compile))
    lm = load(args.model, args.weights, compile=args.compile)
    stream = None if args.json else (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    out = lm.generate(args.prompt, system=args.system, raw=args.raw, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                      stream=stream, **extra)
    if args.json:
        print(json.dumps(out.to_dict(), ensure_ascii=False))
    else:
        print()
    return 0


def _generate_beam(args) -> int:
    """`generate --beam W`: everything that beam search would not honour is refused first."""
    from lmlab.engine.beam import BeamParams, refuse_constraint
    from lmlab.errors import LmlabError
    from lmlab.lm import load

    refuse_constraint([f"--{f}" for f in ("json-schema", "json-object", "regex", "choice", "grammar")
                       if getattr(args, f.replace("-", "_"))], where="--beam (beam search)")
    unused = [flag for flag, on in (("--temperature", args.temperature not in (0, 0.7)), ("--top-k", args.top_k),
                                    ("--top-p", args.top_p != 1.0), ("--seed", args.seed is not None),
                                    ("--watermark", args.watermark is not None), ("--repair", args.repair),
                                    ("--prompt-only", args.prompt_only)) if on]
    if unused:
        raise LmlabError(f"--beam is deterministic beam search; {', '.join(unused)} do(es) not apply to it")
    BeamParams(num_beams=args.beam, max_tokens=args.max_new_tokens)  # bad values fail before the model loads
    lm = load(args.model, args.weights, compile=args.compile)
    out = lm.beam_search(args.prompt, system=args.system, raw=args.raw, num_beams=args.beam,
                         max_new_tokens=args.max_new_tokens)
    print(json.dumps(out.to_dict(), ensure_ascii=False) if args.json else out.text)
    return 0


def cmd_chat(args) -> int:
    from lmlab.cli.chat import run_repl
    from lmlab.lm import load

    lm = load(args.model, args.weights, compile=args.compile)
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}
    return run_repl(lm, settings, system=args.system)


def cmd_decode(args) -> int:
    from lmlab.lm import load
    from lmlab.report import decoding
    from lmlab.report.table import print_table

    lm = load(args.model, args.weights, compile=args.compile, workload="scoring")  # exact distributions
    if args.compare:
        print_table(decoding.compare(lm, args.prompt, args.max_new_tokens, args.seed, raw=args.raw),
                    title=f"decoding {args.prompt!r}")
    else:
        rows = decoding.next_token_distribution(lm, args.prompt, raw=args.raw)
        print_table(rows, title=f"next token after {args.prompt!r}")
        print(f"plot: {decoding.plot_distribution(rows, args.png, f'next token after {args.prompt!r}')}")
    return 0


def cmd_bench_decode(args) -> int:
    import torch

    from lmlab.engine.bench import bench_decode
    from lmlab.lm import load
    from lmlab.report.table import print_kv

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load(args.model, args.weights, compile=args.compile,
              workload="one-stream" if args.streams == 1 else "many-streams")
    r = bench_decode(lm, args.streams, args.prompt_tokens, args.new_tokens, distinct=args.distinct_prompts)
    if args.json:
        print(json.dumps({"weights": lm.weights, "compile": lm.compile,
                          **{k: r[k] for k in ("streams", "tok_s", "ttft_s", "peak_rss_mb")}}))
    else:
        print_kv({"weights": lm.weights, "compile": lm.compile, **r}, title="decode benchmark")
    return 0


def cmd_serve(args) -> int:
    import os

    from lmlab.config import from_args
    from lmlab.errors import LmlabError
    from lmlab.serve.config import ServeConfig

    cfg = from_args(ServeConfig, args)
    if not cfg.api_key and os.environ.get("LMLAB_API_KEY"):
        cfg.api_key = os.environ["LMLAB_API_KEY"]
    try:
        from lmlab.serve.app import serve
    except ImportError as e:
        raise LmlabError(f"lmlab serve needs fastapi and uvicorn ({e}): pip install fastapi uvicorn") from None
    serve(cfg)
    return 0


def cmd_models_list(args) -> int:
    from lmlab.model.io.resolve import list_models
    from lmlab.report.table import print_table

    print_table(list_models(), title="models")
    return 0


def cmd_models_info(args) -> int:
    from lmlab.model.io.info import model_info
    from lmlab.report.table import print_kv

    from lmlab.lm import auto_formats

    info = {**model_info(args.model), **auto_formats()}
    print(json.dumps(info, indent=2)) if args.json else print_kv(info, title="model")
    return 0


def cmd_models_convert(args) -> int:
    from lmlab.model.io.info import convert

    print(convert(args.model, args.out, args.dtype))
    return 0


# ---- entry point --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from lmlab import __version__
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 0
    from lmlab.errors import LmlabError

    try:
        return args.func(args)
    except LmlabError as e:
        if args.debug:
            raise
        print(f"lmlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: still one line, with the way to see more
        if args.debug:
            raise
        print(f"lmlab: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
