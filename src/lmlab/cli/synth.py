"""`lmlab synth self-instruct|magpie|evol|filter`: argument parsing only; lmlab.synth does the work."""

from __future__ import annotations

HELP = {
    "self-instruct": "grow instructions from seed tasks (Self-Instruct)",
    "magpie": "let the model write the user turn from its chat template (Magpie)",
    "evol": "rewrite instructions into harder or rarer ones (Evol-Instruct)",
    "filter": "keep examples a judge rates at or above a threshold (AlpaGasus), minus near-duplicates",
}


def register(sub, common) -> None:
    from lmlab.config import add_flags
    from lmlab.synth.config import SynthConfig

    s = sub.add_parser("synth", parents=[common], help="synthetic instruction data: generate and filter")
    ss = s.add_subparsers(dest="synth_command", metavar="COMMAND", required=True)
    for name, help_ in HELP.items():
        p = ss.add_parser(name, parents=[common], help=help_, description=help_)
        add_flags(p, SynthConfig)
        p.set_defaults(func=cmd_synth, synth=name)


def cmd_synth(args) -> int:
    from lmlab.config import from_args
    from lmlab.report.table import print_kv
    from lmlab.synth import run
    from lmlab.synth.config import SynthConfig

    cfg = from_args(SynthConfig, args)
    summary = run(args.synth, cfg)
    flat = {k: (", ".join(f"{g} {v:.0%}" for g, v in val.items()) if isinstance(val, dict) else val)
            for k, val in summary.items()}
    print_kv(flat, title=f"synth {args.synth} -> {cfg.out}")
    return 0
