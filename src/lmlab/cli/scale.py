"""`lmlab scale`: parameters, FLOPs, Chinchilla-optimal sizes and training time on this machine."""

from __future__ import annotations

import argparse
import json


def register(sub, common) -> None:
    s = sub.add_parser("scale", parents=[common], help="scaling calculator: 6ND, Chinchilla, time on this machine",
                       description="Give one of --params, --flops, --config or --model. Training time divides "
                                   "6*N*D by the model FLOP/s this machine measures training a small model.")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--params", help="model size, e.g. 135M, 7B")
    what.add_argument("--flops", help="compute budget in FLOPs, e.g. 1e18: Chinchilla-optimal model and data")
    what.add_argument("--config", help="a pretraining recipe (YAML): the parameters of its architecture")
    what.add_argument("--model", "-m", help="a model (bundled name, HF folder, .gguf): its parameters")
    s.add_argument("--tokens", help="training tokens (default: Chinchilla's 20 per parameter)")
    s.add_argument("--flops-per-s", type=float, default=None,
                   help="machine throughput (default: measured once, then kept in $LMLAB_HOME/throughput.json)")
    s.add_argument("--measure", action="store_true", help="measure this machine's throughput again")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="with --config: config overrides")
    s.set_defaults(func=cmd_scale)


def cmd_scale(args: argparse.Namespace) -> int:
    from lmlab.report.table import print_kv
    from lmlab.train import scaling

    info, params = {}, None
    if args.params:
        params = scaling.parse_count(args.params)
    elif args.config or args.model:
        config, context = _model_config(args)
        counts = scaling.count_params(config)
        info = {f"params_{k}": v for k, v in counts.items()}
        info["flops_per_token"] = scaling.flops_per_token(config, context)
        params = counts["active"]
    if args.measure:
        scaling.machine_flops_per_s(refresh=True)
    result = scaling.plan(params=params, flops=scaling.parse_count(args.flops) if args.flops else None,
                          tokens=scaling.parse_count(args.tokens) if args.tokens else None,
                          flops_per_s=args.flops_per_s)
    result = {**info, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print_kv({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in result.items()}, title="scale")
    return 0


def _model_config(args):
    """(ModelConfig, context) of a pretraining recipe or an existing model."""
    if args.model:
        from lmlab.model.io.hf import read_config
        from lmlab.model.io.resolve import resolve

        config = read_config(resolve(args.model))
        return config, config.max_seq_len
    from lmlab.config import load_config
    from lmlab.train.config import TrainConfig
    from lmlab.train.pretrain import vocab_size

    cfg = load_config(TrainConfig, args.config, args.overrides)
    return cfg.pretrain.model_config(vocab_size(cfg.pretrain), cfg.max_length), cfg.max_length
