"""The one run skeleton that every `lmlab train STAGE` follows:

    run = Run(cfg, "dpo", "DPO", ...)       # start: run folder, data checked, processes, base model, method
    data, loss, evaluate = ...               # the stage's own pieces, from its module
    result = run.fit(loss, data, evaluate)   # one Trainer
    return run.finish(result)                # config.yaml, final/, loss.png (rank 0)

The stages: sft.py (`--method feature`: classify.py), pretrain.py, rm.py, dpo.py, pro.py and rl.py
(ppo, grpo, rsft). This module also holds what they share: loading the base model, choosing what
trains (`--method`), the frozen reference model, and the export of the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from lmlab.errors import LmlabError
from lmlab.train.config import TrainConfig
from lmlab.train.trainer import Trainer


class Run:
    """One training run of a stage. Constructing it is the start: the run folder defaults to
    runs/STAGE; `check(path)` reads and checks each data file (`read["data"]`, `read["eval_data"]`)
    before the model loads, so that a bad file fails at once; then the processes, the base model
    (`base`, default cfg.model; None: the stage builds its own), `before_method(run)` and the
    method. `eval_data=False`: the stage holds out its own split and never reads cfg.eval_data.
    `fit` trains with one Trainer, `finish` saves the result. `title` names the loss curve."""

    def __init__(self, cfg: TrainConfig, stage: str, title: str, no_data: str, check: Callable | None = None,
                 base: str | None = "", before_method: Callable | None = None, quiet: bool = False,
                 eval_data: bool = True):
        from lmlab.train.distributed import setup

        if not cfg.data:
            raise LmlabError(no_data)
        files = {"data": cfg.data, "eval_data": cfg.eval_data if eval_data else None}
        self.read = {k: check(path) for k, path in files.items() if path} if check else {}
        if cfg.output == TrainConfig.output:
            cfg.output = f"runs/{stage}"
        self.cfg, self.title, self.base = cfg, title, base
        self.d = setup(cfg.device)
        self.model = self.tokenizer = self.folder = self.trainer = None
        self.info: dict = {}
        if base is not None:
            self.model, self.tokenizer, self.folder = load_base(cfg, base or None)
            if before_method:
                before_method(self)
            self.info = apply_method(self.model, cfg, quiet=quiet or not self.d.main)

    def fit(self, loss, data, evaluate=None, model=None, baseline: Callable[[], dict] | None = None) -> dict:
        """Train `model` (default the base model) on the stage's data and objective; the result is
        the method's info and the trainer's last metrics. `baseline()` evaluates the starting
        model as step 0 of metrics.jsonl (not on a resumed run)."""
        self.trainer = Trainer(self.model if model is None else model, loss, data, self.cfg, evaluate, self.d)
        if baseline and not (self.cfg.resume and self.trainer.out.joinpath("checkpoints").is_dir()):
            self.trainer.out.mkdir(parents=True, exist_ok=True)
            (self.trainer.out / "metrics.jsonl").write_text(json.dumps({"step": 0, **baseline()}) + "\n",
                                                            encoding="utf-8")
        return {**self.info, **self.trainer.fit()}

    def finish(self, result: dict, model=None, save: Callable | None = None, rebuild: Callable | None = None) -> dict:
        """Rank 0 saves the resolved config, DIR/final (`save(model, result)`, default `export`)
        and the loss curve. Under FSDP the shards are first gathered (every rank takes part) into
        an unsharded copy: `rebuild()`, default the base model with the method applied."""
        from lmlab.config import save_config
        from lmlab.report.curves import plot_curves

        cfg, d, out = self.cfg, self.d, Path(self.cfg.output)
        model = self.model if model is None else model
        if d.world > 1 and cfg.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.trainer.module,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if d.main:
                model = rebuild() if rebuild else self.fresh_model()
                model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        if d.main:
            save_config(cfg, out / "config.yaml")
            result["final"] = str(save(model, result) if save else export(model, self.folder, cfg))
            if (out / "metrics.jsonl").is_file():
                result["curves"] = str(plot_curves(out / "metrics.jsonl", out / "loss.png", self.title))
        d.barrier()
        return result

    def fresh_model(self):
        """The base model loaded again with the method applied: the shape of what trained."""
        model = load_base(self.cfg, self.base or None)[0]
        apply_method(model, self.cfg, quiet=True)
        return model


def load_base(cfg: TrainConfig, model: str | None = None):
    """(model in fp32, tokenizer, folder) for `model` (default cfg.model; the bundled model)."""
    from lmlab.model.io.hf import load_model
    from lmlab.model.io.resolve import resolve
    from lmlab.tokenizer import Tokenizer

    folder = resolve(model or cfg.model)
    torch.manual_seed(cfg.seed)
    return load_model(folder).train(), Tokenizer.from_folder(folder), folder


METHODS = ("full", "head", "feature", "lora", "adapter", "prefix", "prompt")


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


def reference_model(cfg: TrainConfig, folder, device, path: str | None = None):
    """The frozen reference of DPO, PPO and GRPO: the model at `path`, else the starting model
    (`folder`) loaded again; None with LoRA and no `path`, where the policy with its adapters
    off is the reference and no second copy is needed."""
    if cfg.method == "lora" and not path:
        return None
    from lmlab.cpu import optimize
    from lmlab.model.io.hf import load_model
    from lmlab.model.io.resolve import resolve

    ref = load_model(resolve(path) if path else folder).to(device).eval()
    optimize(ref, device, "train")  # frozen: its products may take the CPU's faster path
    ref.requires_grad_(False)
    return ref
