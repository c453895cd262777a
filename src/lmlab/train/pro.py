"""`lmlab train pro`: preference ranking optimisation on the run skeleton. Its pieces: ranked lists
kept whole (pairs are lists of two), the listwise loss with its SFT term
(lmlab.train.objectives.pro); eval_loss on held-out lists."""

from __future__ import annotations

from lmlab.train.config import TrainConfig
from lmlab.train.preference import NO_DATA, comparison_batches, read_comparisons
from lmlab.train.run import Run


def pro(cfg: TrainConfig) -> dict:
    from lmlab.train.objectives import pro as objective

    run = Run(cfg, "pro", "PRO", NO_DATA,
              check=lambda path: read_comparisons(path, cfg.skip_bad_rows, strict=cfg.strict))
    data = comparison_batches(cfg, run.tokenizer, cfg.data, objective.collate, run.d.world, as_pairs=False)
    loss = objective.make_loss(cfg.pro.sft_weight)
    evaluate = None
    if cfg.eval_data:
        held = comparison_batches(cfg, run.tokenizer, cfg.eval_data, objective.collate, as_pairs=False).examples
        evaluate = lambda m: held_out_loss(m, loss, held, objective.collate, cfg.batch_size)
    return run.finish(run.fit(loss, data, evaluate))


def held_out_loss(model, loss_fn, examples, collate, batch_size: int) -> dict:
    from lmlab.train.trainer import _to

    device = next(model.parameters()).device
    total = count = 0.0
    for s in range(0, len(examples), batch_size):
        loss, n, _ = loss_fn(model, _to(collate(examples[s:s + batch_size]), device))
        total, count = total + float(loss), count + n
    return {"eval_loss": total / max(count, 1)}
