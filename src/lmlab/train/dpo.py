"""`lmlab train dpo`: direct preference optimisation on the run skeleton. Its pieces: comparisons
as pairs, the frozen reference (the adapter-disabled policy with LoRA, `dpo.reference`, or
log-probs computed once with `dpo.precompute_ref`), the DPO loss (lmlab.train.objectives.dpo);
eval_accuracy is the held-out implicit-reward accuracy."""

from __future__ import annotations

from lmlab.train.config import TrainConfig
from lmlab.train.preference import NO_DATA, comparison_batches, read_comparisons
from lmlab.train.run import Run, reference_model


def start(cfg: TrainConfig) -> Run:
    """The run's start, LoRA dropout off unless `dpo.disable_dropout` is false."""
    if cfg.dpo.disable_dropout:
        cfg.lora.dropout = 0.0
    return Run(cfg, "dpo", "DPO", NO_DATA,
               check=lambda path: read_comparisons(path, cfg.skip_bad_rows, strict=cfg.strict))


def dpo(cfg: TrainConfig) -> dict:
    from lmlab.train.objectives import dpo as objective

    run = start(cfg)
    model, c = run.model, cfg.dpo
    reference = reference_model(cfg, run.folder, run.d.device, c.reference)
    data = comparison_batches(cfg, run.tokenizer, cfg.data, objective.collate, run.d.world)
    held = comparison_batches(cfg, run.tokenizer, cfg.eval_data, objective.collate).examples if cfg.eval_data else None
    if c.precompute_ref:  # one reference pass now; training then needs no reference model at all
        model.to(run.d.device)
        for examples in (data.examples, held or []):
            objective.precompute(model, examples, reference, cfg.batch_size)
        reference = None
    loss = objective.DPO(c.beta, c.loss, c.label_smoothing, reference)
    evaluate = (lambda m: loss.evaluate(m, held, cfg.batch_size)) if held else None
    return run.finish(run.fit(loss, data, evaluate))
