"""The training API that `lmlab train ...` calls: load, choose what trains, run, export.

`sft(cfg)` is supervised fine-tuning; the pieces it is made of (load_base, apply_method,
eval_loss, export, finish) are shared with every other objective.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from lmlab.errors import LmlabError
from lmlab.train import data as D
from lmlab.train.config import TrainConfig
from lmlab.train.objectives import sft as sft_objective
from lmlab.train.trainer import Batches, Trainer

METHODS = ("full", "head", "feature", "lora", "adapter", "prefix", "prompt")


def load_base(cfg: TrainConfig):
    """(model in fp32, tokenizer, folder) for the configured model (bundled default)."""
    from lmlab.model.io.hf import load_model
    from lmlab.model.io.resolve import resolve
    from lmlab.tokenizer import Tokenizer

    folder = resolve(cfg.model)
    torch.manual_seed(cfg.seed)
    return load_model(folder).train(), Tokenizer.from_folder(folder), folder


def apply_method(model, cfg: TrainConfig, quiet: bool = False) -> dict:
    """Make the configured part of the model trainable; report the trainable fraction."""
    if cfg.method not in METHODS:
        raise LmlabError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    total = sum(p.numel() for p in model.parameters())
    if cfg.method == "lora":
        from lmlab.model.peft.lora import apply_lora

        if cfg.lora.int8_base:
            from lmlab.model.quant import Int8Linear, _replace_linears

            _replace_linears(model.layers, Int8Linear)
        apply_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
    elif cfg.method == "head":
        untie_head(model)
    elif cfg.method == "adapter":
        from lmlab.model.peft.adapter import apply_adapters

        apply_adapters(model, cfg.adapter.size, cfg.adapter.act)
    elif cfg.method == "prefix":
        from lmlab.model.peft.prefix import apply_prefix

        apply_prefix(model, cfg.prefix.virtual_tokens, cfg.prefix.hidden)
    elif cfg.method == "prompt":
        from lmlab.model.peft.prompt import apply_prompt

        apply_prompt(model, cfg.prompt.virtual_tokens, seed=cfg.seed)
    elif cfg.method == "feature":  # the model only extracts features; lmlab.train.classify trains a head
        model.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {"method": cfg.method, "trainable_params": trainable, "total_params": total,
            "trainable_fraction": trainable / total}
    if not quiet:
        print(f"{cfg.method}: {trainable:,} trainable parameters of {total:,} ({100 * trainable / total:.3f}%)")
    return info


def untie_head(model) -> None:
    """Only the output layer trains. SmolLM2 ties it to the input embedding; it gets its own copy
    first, so that training it leaves the input embeddings as they were."""
    if model.config.family == "gpt2":
        raise LmlabError("GPT-2 checkpoints always tie the output layer to the input embedding, so it "
                         "cannot be trained alone; use --method lora or full")
    model.requires_grad_(False)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.config.tie_embeddings = False


def sft_records(cfg: TrainConfig, path: str) -> list[dict]:
    """The records of a data file, each checked to be a supported format (an error naming file:line)."""
    stats = {}
    records = D.read_records(path, cfg.skip_bad_rows, stats)
    if stats.get("skipped_rows"):
        print(f"{path}: skipped {stats['skipped_rows']} malformed line(s)")
    for r in records:
        D.to_messages(r)
    return records


def sft_batches(cfg: TrainConfig, tokenizer, path: str, world: int = 1, records: list[dict] | None = None) -> Batches:
    """Tokenised, batched examples of `path` (or of its `records`, read already)."""
    records = sft_records(cfg, path) if records is None else records
    key = hashlib.sha256((tokenizer.backend.to_str() + str(tokenizer.chat_template)).encode()).hexdigest()
    examples = D.tokenize_records(records, tokenizer, cfg.max_length, cfg.chat_template, cache_key=key)
    if not examples:
        raise LmlabError(f"{path}: no usable training examples")
    pad = tokenizer.token_id(tokenizer.special_tokens.get("pad_token", "")) or 0
    lengths = [len(e.ids) for e in examples]
    global_batch = cfg.batch_size * world
    if cfg.packing:
        # A packed micro-batch holds about batch_size * max_length tokens per rank.
        def plan(epoch):
            order = D.length_batches(lengths, 1, cfg.seed, epoch)
            out, cur, used = [], [], 0
            for [i] in order:
                if cur and used + lengths[i] > global_batch * cfg.max_length:
                    out.append(cur)
                    cur, used = [], 0
                cur.append(i)
                used += lengths[i]
            return out + ([cur] if cur else [])
    else:
        def plan(epoch):
            return [b for b in D.length_batches(lengths, global_batch, cfg.seed, epoch) if len(b) == global_batch] \
                or [list(range(len(lengths)))]
    return Batches(examples, plan, lambda ex: sft_objective.collate(ex, pad, cfg.packing, cfg.max_length))


def eval_loss(loss_fn, examples, collate, batch_size: int = 8):
    """A function model -> {"eval_loss": mean loss per counted unit} over fixed examples."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))

    def evaluate(model) -> dict:
        total, count = 0.0, 0
        for s in range(0, len(order), batch_size):
            loss, n, _ = loss_fn(model, collate([examples[i] for i in order[s:s + batch_size]]))
            total, count = total + float(loss), count + n
        return {"eval_loss": total / max(count, 1)}

    return evaluate


def export(model, folder, cfg: TrainConfig) -> Path:
    """DIR/final: an HF folder with adapters merged into the weights (what --model accepts);
    for LoRA also DIR/adapter in peft's format; for adapter, prefix and prompt only DIR/adapter."""
    from lmlab.model.io.hf import load_model, save_model
    from lmlab.model.peft.lora import load_adapter, lora_modules, merge_lora, save_adapter

    out = Path(cfg.output)
    if cfg.method in ("adapter", "prefix", "prompt"):
        # These cannot be merged into the weights: the result is the adapter folder, which
        # `--model` and lmlab.load accept (lmlab.model.peft).
        from lmlab.model.peft import save_trained

        base = str(Path(cfg.model).resolve()) if cfg.model and Path(cfg.model).exists() else cfg.model or "smollm2"
        if cfg.method == "prefix":
            model.prefix.fold()  # the reparameterisation MLP was for training only
        return save_trained(model, out / "adapter", base)
    if lora_modules(model):
        save_adapter(model, out / "adapter", base_model=str(folder), dropout=cfg.lora.dropout)
        if cfg.lora.int8_base:  # merge into full-precision weights, not the int8 ones
            model = load_adapter(load_model(folder), out / "adapter")
        model = merge_lora(model)
    save_model(model.eval(), out / "final", tokenizer_folder=folder)
    return out / "final"


def finish(trainer: Trainer, model, folder, cfg: TrainConfig, result: dict, title: str) -> dict:
    """Export, plot, save the resolved config (rank 0)."""
    from lmlab.config import save_config
    from lmlab.report.curves import plot_curves

    out = Path(cfg.output)
    if trainer.d.world > 1 and cfg.distributed == "fsdp":
        # Weights are sharded: gather them (every rank takes part) into an unsharded copy.
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(trainer.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if trainer.d.main:
            model = load_base(cfg)[0]
            apply_method(model, cfg, quiet=True)
            model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    if trainer.d.main:
        save_config(cfg, out / "config.yaml")
        result["final"] = str(export(model, folder, cfg))
        if (out / "metrics.jsonl").is_file():
            result["curves"] = str(plot_curves(out / "metrics.jsonl", out / "loss.png", title))
    trainer.d.barrier()
    return result


def sft(cfg: TrainConfig) -> dict:
    """Supervised fine-tuning (instruction tuning); returns the last metrics and output paths."""
    from lmlab.train.distributed import setup

    if cfg.method == "feature":
        from lmlab.train.classify import train_feature

        return train_feature(cfg)
    if not cfg.data:
        raise LmlabError("no training data: give data (a .jsonl/.parquet file, or flan for the built-in tasks)")
    flan_run = cfg.data == "flan"
    # The data is read and checked before the model loads, so that a bad file fails at once.
    records = None if flan_run else sft_records(cfg, cfg.data)
    eval_records = sft_records(cfg, cfg.eval_data) if cfg.eval_data else None
    d = setup(cfg.device)
    model, tokenizer, folder = load_base(cfg)
    if flan_run:
        cfg.data, held = _write_flan(cfg)
        before = _flan_score(model, tokenizer, folder, held) if d.main else None
    info = apply_method(model, cfg, quiet=not d.main)
    data = sft_batches(cfg, tokenizer, cfg.data, d.world, records)
    evaluate = None
    if cfg.eval_data:
        held = sft_batches(cfg, tokenizer, cfg.eval_data, records=eval_records)
        evaluate = eval_loss(sft_objective.loss, held.examples, held.collate, cfg.batch_size)
    trainer = Trainer(model, sft_objective.loss, data, cfg, evaluate, d)
    result = {**info, **trainer.fit()}
    if flan_run and d.main:
        result.update(_flan_report(before, _flan_score(model, tokenizer, folder, held), cfg))
    return finish(trainer, model, folder, cfg, result, "SFT")


# ---- the FLAN effect in miniature (--data flan) -----------------------------------------------------

def _write_flan(cfg: TrainConfig) -> tuple[str, list[dict]]:
    from lmlab.train.flan import make_data

    train, held = make_data(cfg.flan.per_family, cfg.flan.holdout, cfg.seed, cfg.flan.eval_per_family)
    out = Path(cfg.output) / "data"
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", held)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"built-in instruction data: {len(train)} training records from clusters outside "
          f"{', '.join(cfg.flan.holdout)}; {len(held)} held-out records -> {out}")
    return str(out / "train.jsonl"), held


def _flan_score(model, tokenizer, folder, held):
    from lmlab.lm import LM
    from lmlab.train.flan import accuracy

    was_training = model.training
    with torch.no_grad():
        scores, rows = accuracy(LM(model.eval(), tokenizer, folder), held)
    model.train(was_training)
    return scores, rows


def _flan_report(before, after, cfg: TrainConfig) -> dict:
    from lmlab.report.table import print_table

    (b, b_rows), (a, a_rows) = before, after
    print_table([{"held-out cluster": c, "accuracy before": f"{b[c]:.2f}", "accuracy after": f"{a[c]:.2f}"}
                 for c in b], title="FLAN effect: exact-match accuracy on task clusters never trained on")
    print_table([{"prompt": r0["prompt"], "reference": r0["completion"], "before": r0["answer"].strip()[:60],
                  "after": r1["answer"].strip()[:60]} for r0, r1 in list(zip(b_rows, a_rows))[::max(1, len(b_rows) // 4)]],
                title="sample answers")
    Path(cfg.output, "flan.json").write_text(json.dumps({"before": b, "after": a, "answers_after": a_rows}, indent=1),
                                             encoding="utf-8")
    return {"heldout_accuracy_before": b["all"], "heldout_accuracy_after": a["all"]}
