"""adapt: domain-adaptive continued pretraining (`lmlab train pretrain --init MODEL --data corpus`)
of the current model, reported as domain perplexity down (the corpus's held-out split, before
and after) and general perplexity up (a held-out general text, before and after)."""

from __future__ import annotations

from pathlib import Path

from lmlab.pipeline.stages.common import curve, plain, resumed_from, train_config


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    out = [] if cfg.corpus.startswith("stories:") else [("corpus", cfg.corpus)]
    return out + ([("general text", cfg.general)] if cfg.general else [])


def run(cfg, ctx, folder: Path) -> dict:
    from lmlab.lm import load
    from lmlab.pipeline.metrics import perplexity
    from lmlab.train.pretrain import pretrain

    start_model = ctx.current_model()
    tc = train_config(ctx, cfg, folder, data=cfg.corpus, method=cfg.method, max_steps=cfg.max_steps,
                      batch_size=cfg.batch_size, max_length=cfg.max_length, lr=cfg.lr,
                      **{"pretrain.init": start_model, "pretrain.samples": []})  # eval shows answers
    start = resumed_from(Path(tc.output))
    result = pretrain(tc)
    out = {"model": result.get("final"), "resumed_from_step": start, "metrics": plain(result),
           "curve": curve(tc.output),
           "domain_ppl_before": result["init_eval_ppl"], "domain_ppl_after": result.get("eval_ppl")}
    if cfg.general and ctx.dist.main:
        before = perplexity(load(start_model, workload="scoring"), cfg.general, cfg.general_limit, folder / "general-before")
        after = perplexity(load(out["model"], workload="scoring"), cfg.general, cfg.general_limit, folder / "general-after")
        out.update(general_ppl_before=before, general_ppl_after=after,
                   general_ppl_change=after["value"] / before["value"] - 1)
    out["domain_ppl_change"] = (out["domain_ppl_after"] / out["domain_ppl_before"] - 1
                                if out["domain_ppl_after"] else None)
    return out
