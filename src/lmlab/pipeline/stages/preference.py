"""preference: DPO on preference pairs (lmlab.train.dpo), or a reward model
(lmlab.train.rm) then PPO or GRPO against it (lmlab.train.rl). The pairs are the data
stage's curated ones when it ran, else `data` (HH-RLHF harmless-base by default): the first
`limit` train, the next `eval_limit` are held out."""

from __future__ import annotations

from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.pipeline.stages.common import curve, plain, resumed_from, train_config


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    return [("pairs", cfg.data)]


def split(path: str, limit: int, eval_limit: int, folder: Path) -> tuple[str, str | None]:
    """The first `limit` records and the next `eval_limit`, as two JSONL files."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line if line.endswith("\n") else line + "\n")
            if len(lines) >= limit + eval_limit:
                break
    if len(lines) < limit + min(eval_limit, 1):
        raise LmlabError(f"{path}: {len(lines)} records, fewer than preference.limit={limit} + eval_limit")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.jsonl").write_text("".join(lines[:limit]), encoding="utf-8")
    held = None
    if eval_limit:
        (folder / "pairs_eval.jsonl").write_text("".join(lines[limit:]), encoding="utf-8")
        held = str(folder / "pairs_eval.jsonl")
    return str(folder / "pairs.jsonl"), held


def run(cfg, ctx, folder: Path) -> dict:
    from lmlab.train import rl
    from lmlab.train.dpo import dpo
    from lmlab.train.rm import rm as train_rm

    source = ctx.results.get("data", {}).get("preference") or cfg.data
    pairs, held = split(source, cfg.limit, cfg.eval_limit, folder / "data")
    common = dict(method="lora", batch_size=cfg.batch_size, max_length=cfg.max_length, lr=cfg.lr)
    out = {}
    if cfg.method == "dpo":
        tc = train_config(ctx, cfg, folder, data=pairs, eval_data=held, max_steps=cfg.max_steps,
                          **{**common, "dpo.beta": cfg.beta})
        start = resumed_from(Path(tc.output))
        result = dpo(tc)
    else:
        rm_cfg = train_config(ctx, cfg, folder, data=pairs, eval_data=held, max_steps=cfg.rm_steps,
                              output=str(folder / "rm"), **common)
        rm = train_rm(rm_cfg)
        out["reward_model"] = {"metrics": plain(rm), "curve": curve(rm_cfg.output)}
        tc = train_config(ctx, cfg, folder, data=pairs, eval_data=held, max_steps=cfg.max_steps,
                          **{**common, "rm.models": [rm_cfg.output]})
        start = resumed_from(Path(tc.output))
        result = (rl.ppo if cfg.method == "ppo" else rl.grpo)(tc)
    return {**out, "model": result.get("final"), "method": cfg.method, "resumed_from_step": start,
            "metrics": plain(result), "curve": curve(tc.output)}
