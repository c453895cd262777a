"""`lmlab data curate|report` and `lmlab tokenizer train|compare`: argument parsing only; the
work is done by lmlab.data.

`curate`'s flags are generated from `CurateConfig` (lmlab/data/config.py); every step's settings
are reached with `key=value` (e.g. `minhash.bands=20 language.languages=[en,ko]`) or a recipe
(--config recipes/curate_web.yaml).
"""

from __future__ import annotations


def register(sub, common) -> None:
    from lmlab.config import add_flags
    from lmlab.data.config import CurateConfig

    d = sub.add_parser("data", parents=[common], help="curate pretraining corpora (dedup, quality, PII, ...)")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = dsub.add_parser(
        "curate", parents=[common], help="run the curation steps over files; write DIR/data, DIR/removed, a report",
        description="Positional arguments are input files or folders (JSONL, text, Parquet) and key=value "
                    "overrides of any config key. Steps: normalize, language, gopher, c4, toxicity, "
                    "decontaminate, exact_dedup, minhash, pii; each has `<step>.enabled` and its settings.")
    add_flags(c, CurateConfig)
    c.add_argument("--decontaminate", nargs="+", metavar="FILE", default=None, dest="decontaminate_files",
                   help="evaluation files (any file lmlab eval reads) to remove 13-gram overlaps with")
    c.set_defaults(func=cmd_curate)
    r = dsub.add_parser("report", parents=[common], help="print the report of a curation run")
    r.add_argument("dir")
    r.add_argument("--json", action="store_true", help="print report.json")
    r.set_defaults(func=cmd_report)

    t = sub.add_parser("tokenizer", parents=[common], help="train byte-level BPE tokenizers and compare them")
    tsub = t.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    tt = tsub.add_parser("train", parents=[common], help="train a byte-level BPE (the code `train pretrain` uses)")
    tt.add_argument("--data", nargs="+", required=True, metavar="FILE",
                    help="corpus files or folders (.txt/.md, .jsonl `text`, .parquet), or stories:N")
    tt.add_argument("--vocab-size", type=int, required=True)
    tt.add_argument("--byte-fallback", action="store_true",
                    help="SentencePiece-style BPE over characters, unknown characters as <0xNN> byte tokens")
    tt.add_argument("--out", "-o", required=True, help="tokenizer folder to write")
    tt.add_argument("--lang", default=None, metavar="A,B",
                    help="JSONL with a `lang` field: train only on these languages")
    tt.add_argument("--part", default="all", choices=("all", "train", "test"),
                    help="JSONL: the half of the documents (by doc_id) to train on; compare on the other")
    tt.set_defaults(func=cmd_tokenizer_train)
    tc = tsub.add_parser("compare", parents=[common],
                         help="fertility, bytes/token, words split and token premium vs English, per language")
    tc.add_argument("tokenizers", nargs="+", metavar="TOK",
                    help="tokenizer folders, model folders, or `bundled` (the bundled model's tokenizer)")
    tc.add_argument("--data", required=True, help="parallel JSONL: `lang`, `id` and `text` per sentence")
    tc.add_argument("--png", default="tokenizer_compare.png", help="where to write the plot")
    tc.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    tc.add_argument("--part", default="all", choices=("all", "train", "test"),
                    help="the half of the documents (by doc_id) to measure on")
    tc.set_defaults(func=cmd_tokenizer_compare)


def cmd_curate(args) -> int:
    from pathlib import Path

    from lmlab.config import from_args
    from lmlab.data.config import CurateConfig
    from lmlab.data.pipeline import curate
    from lmlab.data.report import print_report

    inputs, overrides = [], []
    for item in args.overrides or []:
        (overrides if "=" in item and not Path(item).exists() else inputs).append(item)
    args.overrides = overrides
    values = {"inputs": inputs} if inputs else {}
    if args.decontaminate_files:
        values["decontaminate.files"] = args.decontaminate_files
    cfg = from_args(CurateConfig, args, **values)
    report = curate(cfg)
    print_report(report)
    print(f"\nwrote {cfg.out}/data/*.{cfg.out_format}, {cfg.out}/removed/*.jsonl, {cfg.out}/report.json, "
          f"{cfg.out}/report.html")
    return 0


def cmd_report(args) -> int:
    import json

    from lmlab.data.report import load_report, print_report

    report = load_report(args.dir)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        print_report(report)
    return 0


def cmd_tokenizer_train(args) -> int:
    from lmlab.data.tokenizers import train_tokenizer

    langs = [x.strip() for x in args.lang.split(",")] if args.lang else None
    folder, n_docs = train_tokenizer(args.data, args.vocab_size, args.out, byte_fallback=args.byte_fallback,
                                     languages=langs, part=args.part)
    print(f"trained on {n_docs} documents; wrote {folder}/tokenizer.json")
    return 0


def cmd_tokenizer_compare(args) -> int:
    from lmlab.data.tokenizers import compare, plot_compare
    from lmlab.report.table import print_table

    rows = compare(args.tokenizers, args.data, args.part)
    print_table(rows, title=f"tokenizer efficiency on {args.data}")
    print(f"plot: {plot_compare(rows, args.png)}")
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0

