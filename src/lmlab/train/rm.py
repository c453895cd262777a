"""`lmlab train rm`: a reward model on the run skeleton. Its pieces: comparisons (ranked lists as
their pairs), the reward model (lmlab.train.reward_model: the LM's trunk and a scalar head), the
pairwise loss (lmlab.train.objectives.reward); eval_accuracy is the held-out pair accuracy."""

from __future__ import annotations

from lmlab.train.config import TrainConfig
from lmlab.train.preference import NO_DATA, comparison_batches, read_comparisons
from lmlab.train.run import Run, export


def rm(cfg: TrainConfig) -> dict:
    from lmlab.train import reward_model
    from lmlab.train.objectives import reward

    run = Run(cfg, "rm", "reward model", NO_DATA,
              check=lambda path: read_comparisons(path, cfg.skip_bad_rows, strict=cfg.strict))
    rmodel = reward_model.RewardModel(run.model)
    data = comparison_batches(cfg, run.tokenizer, cfg.data, reward.collate, run.d.world)
    evaluate = None
    if cfg.eval_data:
        held = comparison_batches(cfg, run.tokenizer, cfg.eval_data, reward.collate).examples
        evaluate = lambda m: reward.pair_accuracy(m, held, cfg.batch_size)
    result = run.fit(reward.make_loss(cfg.rm.center), data, evaluate, model=rmodel)

    def save(m: reward_model.RewardModel, _):
        if cfg.method == "lora":  # before export merges the adapter into the weights
            m.save_head(f"{cfg.output}/adapter")
            reward_model.save_lora_state(m.lm, f"{cfg.output}/adapter")
        final = export(m.lm, run.folder, cfg)
        m.save_head(final)
        return final

    return run.finish(result, model=rmodel, save=save, rebuild=lambda: reward_model.RewardModel(run.fresh_model()))
