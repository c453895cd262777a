"""sft: instruction tuning with lmlab.train.sft.sft (what `lmlab train sft` runs), on the data
stage's curated records when that stage ran, else on `data` (`flan`: the built-in tasks)."""

from __future__ import annotations

from pathlib import Path

from lmlab.pipeline.stages.common import curve, plain, resumed_from, train_config


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    return [] if cfg.data == "flan" else [("data", cfg.data)]


def run(cfg, ctx, folder: Path) -> dict:
    from lmlab.train.sft import sft

    data = ctx.results.get("data", {}).get("sft") or cfg.data
    tc = train_config(ctx, cfg, folder, data=data, method=cfg.method, max_steps=cfg.max_steps,
                      batch_size=cfg.batch_size, max_length=cfg.max_length, lr=cfg.lr,
                      **{"flan.holdout": list(cfg.holdout), "flan.per_family": cfg.per_family})
    start = resumed_from(Path(tc.output))
    result = sft(tc)
    return {"model": result.get("final"), "data": tc.data, "resumed_from_step": start,
            "metrics": plain(result), "curve": curve(tc.output)}
