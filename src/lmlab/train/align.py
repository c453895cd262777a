"""Training from comparisons: `rm(cfg)` a reward model, `dpo(cfg)`, `pro(cfg)`. Each follows
`run.sft`: load, choose what trains, one Trainer, export DIR/final (+ DIR/adapter with LoRA).
RL from a reward model (ppo, grpo, rsft) is in `lmlab.train.rl`."""

from __future__ import annotations

from lmlab.cpu import optimize
from lmlab.errors import LmlabError
from lmlab.train import data as D
from lmlab.train.config import TrainConfig
from lmlab.train.preference import read_comparisons, tokenize_all
from lmlab.train.run import apply_method, finish, load_base
from lmlab.train.trainer import Batches, Trainer


def comparison_batches(cfg: TrainConfig, tokenizer, path: str, collate, world: int = 1,
                       as_pairs: bool = True) -> Batches:
    """Tokenised comparisons (ranked lists split into pairs unless as_pairs is False), batched
    by similar length."""
    stats = {"reported": True}  # start() has reported unusable rows already
    comparisons = read_comparisons(path, cfg.skip_bad_rows, stats, cfg.strict)
    if stats.get("skipped_rows"):
        print(f"{path}: skipped {stats['skipped_rows']} bad record(s)")
    examples = tokenize_all(comparisons, tokenizer, cfg.max_length, cfg.chat_template, as_pairs)
    if not examples:
        raise LmlabError(f"{path}: no usable comparisons")
    lengths = [len(e.prompt) + sum(len(r) for r in e.responses) for e in examples]
    global_batch = cfg.batch_size * world

    def plan(epoch):
        return [b for b in D.length_batches(lengths, global_batch, cfg.seed, epoch) if len(b) == global_batch] \
            or [list(range(len(lengths)))]

    return Batches(examples, plan, collate)


def held_out_loss(model, loss_fn, examples, collate, batch_size: int) -> dict:
    from lmlab.train.trainer import _to

    device = next(model.parameters()).device
    total = count = 0.0
    for s in range(0, len(examples), batch_size):
        loss, n, _ = loss_fn(model, _to(collate(examples[s:s + batch_size]), device))
        total, count = total + float(loss), count + n
    return {"eval_loss": total / max(count, 1)}


def start(cfg: TrainConfig, name: str):
    """Common start: the run folder defaults to runs/NAME; (dist, model, tokenizer, folder, info).
    The data files are read and checked first, so that a bad file fails before the model loads."""
    from lmlab.train.distributed import setup
    from lmlab.train.preference import read_prompts

    if not cfg.data:
        raise LmlabError("no training data: give data (a .jsonl/.parquet file)")
    for path in filter(None, (cfg.data, cfg.eval_data)):
        if name in ("ppo", "grpo", "rsft"):
            read_prompts(path, cfg.skip_bad_rows, cfg.strict)
        else:
            read_comparisons(path, cfg.skip_bad_rows, strict=cfg.strict)
    if cfg.output == TrainConfig.output:
        cfg.output = f"runs/{name}"
    if name == "dpo" and cfg.dpo.disable_dropout:
        cfg.lora.dropout = 0.0
    d = setup(cfg.device)
    model, tokenizer, folder = load_base(cfg)
    return d, model, tokenizer, folder, apply_method(model, cfg, quiet=not d.main)


def rm(cfg: TrainConfig) -> dict:
    """A reward model: the LM's trunk and a scalar head, trained on pairs; eval_accuracy is the
    held-out pair accuracy."""
    from lmlab.train.objectives import reward

    d, model, tokenizer, folder, info = start(cfg, "rm")
    rmodel = reward.RewardModel(model)
    data = comparison_batches(cfg, tokenizer, cfg.data, reward.collate, d.world)
    evaluate = None
    if cfg.eval_data:
        held = comparison_batches(cfg, tokenizer, cfg.eval_data, reward.collate).examples
        evaluate = lambda m: reward.pair_accuracy(m, held, cfg.batch_size)
    trainer = Trainer(rmodel, reward.make_loss(cfg.rm.center), data, cfg, evaluate, d)
    result = {**info, **trainer.fit()}
    if d.main and cfg.method == "lora":  # before export merges the adapter into the weights
        rmodel.save_head(f"{cfg.output}/adapter")
        reward.save_lora_state(model, f"{cfg.output}/adapter")
    result = finish(trainer, model, folder, cfg, result, "reward model")
    if d.main:
        rmodel.save_head(result["final"])
    return result


def _reference(cfg: TrainConfig, device):
    """DPO's frozen reference: None means the model itself with its adapters off (LoRA)."""
    if cfg.method == "lora" and not cfg.dpo.reference:
        return None
    from lmlab.model.io.hf import load_model
    from lmlab.model.io.resolve import resolve

    ref = load_model(resolve(cfg.dpo.reference or cfg.model)).to(device).eval()
    optimize(ref, device, "train")  # frozen: its products may take the CPU's faster path
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def dpo(cfg: TrainConfig) -> dict:
    """Direct preference optimisation; eval_accuracy is the held-out implicit-reward accuracy."""
    from lmlab.train.objectives import dpo as objective

    d, model, tokenizer, folder, info = start(cfg, "dpo")
    reference = _reference(cfg, d.device)
    c = cfg.dpo
    data = comparison_batches(cfg, tokenizer, cfg.data, objective.collate, d.world)
    held = comparison_batches(cfg, tokenizer, cfg.eval_data, objective.collate).examples if cfg.eval_data else None
    if c.precompute_ref:  # one reference pass now; training then needs no reference model at all
        model.to(d.device)
        for examples in (data.examples, held or []):
            objective.precompute(model, examples, reference, cfg.batch_size)
        reference = None
    loss = objective.DPO(c.beta, c.loss, c.label_smoothing, reference)
    evaluate = (lambda m: loss.evaluate(m, held, cfg.batch_size)) if held else None
    trainer = Trainer(model, loss, data, cfg, evaluate, d)
    result = {**info, **trainer.fit()}
    return finish(trainer, model, folder, cfg, result, "DPO")


def pro(cfg: TrainConfig) -> dict:
    """Preference ranking optimisation over ranked lists (pairs are lists of two)."""
    from lmlab.train.objectives import pro as objective

    d, model, tokenizer, folder, info = start(cfg, "pro")
    data = comparison_batches(cfg, tokenizer, cfg.data, objective.collate, d.world, as_pairs=False)
    loss = objective.make_loss(cfg.pro.sft_weight)
    evaluate = None
    if cfg.eval_data:
        held = comparison_batches(cfg, tokenizer, cfg.eval_data, objective.collate, as_pairs=False).examples
        evaluate = lambda m: held_out_loss(m, loss, held, objective.collate, cfg.batch_size)
    trainer = Trainer(model, loss, data, cfg, evaluate, d)
    result = {**info, **trainer.fit()}
    return finish(trainer, model, folder, cfg, result, "PRO")
