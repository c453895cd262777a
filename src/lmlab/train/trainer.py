"""The one training loop. An objective is a function (model, batch) -> (loss_sum, count, metrics);
the trainer owns everything else: data order, accumulation, clipping, schedule, bf16 autocast,
logging, evaluation, early stopping, checkpoints and exact resume, torchrun data parallelism.

Exactness: each optimizer step sums the losses of its micro-batches (on every rank) and divides
the gradients by the global count once, so 2 ranks x batch 2 update exactly as 1 rank x batch 4.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lmlab.cpu import optimize
from lmlab.errors import LmlabError
from lmlab.train import checkpoint
from lmlab.train.config import TrainConfig
from lmlab.train.distributed import Dist, setup, wrap


class _Objective(nn.Module):
    """Model + loss as one module, so DDP/FSDP see a forward that returns the loss."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


@dataclass
class Batches:
    """What the trainer draws from: `plan(epoch)` gives the global micro-batches of an epoch as
    lists of example indices (deterministic in the epoch), `collate(examples)` a batch dict."""
    examples: list
    plan: Callable[[int], list[list[int]]]
    collate: Callable[[list], dict]


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant" or total <= cfg.warmup_steps:
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay


class Trainer:
    def __init__(self, model: nn.Module, loss_fn: Callable, data: Batches, cfg: TrainConfig,
                 evaluate: Callable[[nn.Module], dict] | None = None, d: Dist | None = None,
                 params: list[nn.Parameter] | None = None):
        self.cfg, self.data, self.evaluate = cfg, data, evaluate
        self.d = d or setup(cfg.device)
        self.out = Path(cfg.output)
        self.model = model.to(self.d.device)
        optimize(model, self.d.device, "train")  # the CPU speed layer, where it applies
        model.gradient_checkpointing = cfg.gradient_checkpointing
        self.module = wrap(_Objective(model, loss_fn), self.d, cfg.distributed)
        self.params = params or [p for p in self.module.parameters() if p.requires_grad]
        if not self.params:
            raise LmlabError("nothing to train: every parameter is frozen")
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=tuple(cfg.betas), foreach=True)
        steps_per_epoch = max(1, len(data.plan(0)) // cfg.grad_accum)
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        self.state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "bad_evals": 0, "world": self.d.world}
        self._saved = None

    # ---- checkpoints ------------------------------------------------------------------------

    def _trainable_names(self) -> set[str]:
        # Names as get_state_dict gives them: relative to _Objective, without DDP's "module.".
        return {"model." + n for n, p in self.model.named_parameters() if p.requires_grad}

    def save(self) -> Path:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=self.d.world > 1)
        model_state, optim_state = get_state_dict(self.module, self.optimizer, options=opts)
        keep = self._trainable_names()
        model_state = {k: v for k, v in model_state.items() if k in keep}
        if not all(torch.isfinite(v).all() for v in model_state.values()):
            self._diverged("the weights became non-finite", saved=True)
        self._saved = self.state["step"]
        return checkpoint.save(self.out / "checkpoints", self.state["step"], model_state, optim_state,
                               self.state, self.d, self.cfg.keep_last)

    def resume(self) -> bool:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        root = self.out / "checkpoints"
        path = checkpoint.latest(root)
        skipped = [p.name for p in sorted(root.glob("step-*")) if path is None or p.name > path.name]
        if skipped and self.d.main:
            print(f"skipping incomplete checkpoint(s) {', '.join(skipped)} (files missing)")
        if path is None:
            return False
        model_state, optim_state, state = checkpoint.load(path, self.d)
        opts = StateDictOptions(full_state_dict=True, strict=False, broadcast_from_rank0=False)
        set_state_dict(self.module, self.optimizer, model_state_dict=model_state,
                       optim_state_dict=optim_state, options=opts)
        self.state, self._saved = state, state["step"]
        self._trim_log(state["step"])
        return True

    # ---- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict:
        cfg, d = self.cfg, self.d
        if cfg.resume and self.resume() and d.main:
            print(f"resumed from step {self.state['step']}")
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
        from tqdm import tqdm

        bar = tqdm(total=self.total_steps, initial=self.state["step"], desc="training", unit="step",
                   disable=not (cfg.progress and d.main), dynamic_ncols=True)
        plan = self.data.plan(self.state["epoch"])
        last, t0, tokens = {}, time.perf_counter(), 0
        weight_norm = self._weight_norm()
        while self.state["step"] < self.total_steps:
            self.module.train()
            totals = [0.0, 0.0, 0.0]  # loss sum, count, tokens (this rank)
            extra = {}  # the objective's other metrics (this rank's), averaged over the micro-batches
            for _ in range(cfg.grad_accum):
                if self.state["batch"] >= len(plan):
                    self.state["epoch"] += 1
                    self.state["batch"] = 0
                    plan = self.data.plan(self.state["epoch"])
                idx = plan[self.state["batch"]]
                self.state["batch"] += 1
                mine = idx[d.rank * len(idx) // d.world:(d.rank + 1) * len(idx) // d.world]
                batch = _to(self.data.collate([self.data.examples[i] for i in mine]), d.device)
                with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    loss_sum, count, metrics = self.module(batch)
                loss_sum.backward()
                totals[0] += loss_sum.item()
                totals[1] += count
                totals[2] += metrics.get("tokens", 0)
                for k, v in metrics.items():
                    if k != "tokens":
                        extra[k] = extra.get(k, 0.0) + v / cfg.grad_accum
            loss_total, count, step_tokens = d.sum(totals)
            if not math.isfinite(loss_total):
                self._diverged(f"loss became {loss_total}")
            self._watch_loss(loss_total / max(count, 1))
            # DDP averaged over ranks; turn that into a mean over the global count.
            scale = d.world / max(count, 1)
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm or float("inf"))
                         .item())
            if not math.isfinite(grad_norm):
                self._diverged(f"the gradient norm became {grad_norm}")
            lr = cfg.lr * lr_factor(self.state["step"], self.total_steps, cfg)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            before, weight_norm = weight_norm, self._weight_norm()
            if cfg.max_weight_growth and before > 0 and not weight_norm <= cfg.max_weight_growth * before:
                self._diverged(f"one update multiplied the trainable weights' norm by {weight_norm / before:.3g} "
                               f"({before:.4g} -> {weight_norm:.4g})", good_before=self.state["step"] + 1)
            self.state["step"] += 1
            tokens += step_tokens
            step = self.state["step"]
            self.state["tokens"] = self.state.get("tokens", 0) + int(step_tokens)
            elapsed = time.perf_counter() - t0
            last = {"step": step, "loss": loss_total / max(count, 1), "lr": lr, "grad_norm": grad_norm,
                    "tokens": self.state["tokens"], "tokens_per_s": tokens / elapsed, "elapsed_s": round(elapsed, 3),
                    **extra}
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
            stop = False
            if self.evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < self.total_steps:
                last.update(self._evaluate())
                stop = self._should_stop(last)
            if step % cfg.log_every == 0 or step == self.total_steps:
                self._log(last)
            if (cfg.save_every and step % cfg.save_every == 0) or stop:
                self.save()
            if stop:
                if d.main:
                    print(f"early stopping at step {step}: no improvement in {cfg.early_stopping_patience} evaluations")
                break
        bar.close()
        if self.evaluate is not None and self.state["step"] >= self.total_steps:
            last.update(self._evaluate())
            self._log(last)
        if self._saved != self.state["step"]:
            self.save()
        return last

    def _watch_loss(self, loss: float) -> None:
        """Stop at a loss spike against the loss's running mean and variance (exponential, over
        about the last 20 steps, kept in the state so that a resumed run judges alike)."""
        sigma, st = self.cfg.divergence_sigma, self.state
        n, mean, var = st.get("loss_n", 0), st.get("loss_mean", 0.0), st.get("loss_var", 0.0)
        if sigma and n >= 10 and loss - mean > max(sigma * math.sqrt(var), abs(mean), 1.0):
            # The weights that gave this loss came from the previous step's update.
            self._diverged(f"the loss jumped to {loss:.4g} (running mean {mean:.4g}, std {math.sqrt(var):.3g})",
                           good_before=st["step"])
        a = 1.0 / min(n + 1, 20)
        delta = loss - mean
        st["loss_n"], st["loss_mean"] = n + 1, mean + a * delta
        st["loss_var"] = (1 - a) * (var + a * delta * delta)

    def _weight_norm(self) -> float:
        """The norm of all trainable weights (this rank's shards summed over ranks under FSDP)."""
        local = [p.detach().to_local() if hasattr(p, "to_local") else p.detach() for p in self.params]
        sq = float(torch.stack([n.float() for n in torch._foreach_norm(local)]).square().sum())
        if self.d.world > 1 and self.cfg.distributed == "fsdp":
            sq = self.d.sum([sq])[0]
        return math.sqrt(sq)

    def _diverged(self, what: str, saved: bool = False, good_before: int | None = None) -> None:
        """Stop without writing anything: the last checkpoint stays the last good one (the newest
        one written before step `good_before`, when the damage began earlier than this step)."""
        kept = checkpoint.latest(self.out / "checkpoints")
        if good_before is not None and kept is not None and int(kept.name.split("-")[1]) >= good_before:
            kept = max((p for p in kept.parent.glob("step-*")
                        if checkpoint.complete(p) and int(p.name.split("-")[1]) < good_before), default=None)
        when = "after" if saved else "at"
        raise LmlabError(f"{what} {when} step {self.state['step'] + (0 if saved else 1)}; stopped. Last good "
                         f"checkpoint: {kept or 'none yet'} (lower the learning rate, or check the data)")

    def _evaluate(self) -> dict:
        self.module.eval()
        with torch.no_grad():
            result = self.evaluate(self.model)
        self.module.train()
        return result

    def _should_stop(self, metrics: dict) -> bool:
        value = metrics.get("eval_loss")
        if value is None or not self.cfg.early_stopping_patience:
            return False
        if self.state["best"] is None or value < self.state["best"]:
            self.state["best"], self.state["bad_evals"] = value, 0
        else:
            self.state["bad_evals"] += 1
        return self.state["bad_evals"] >= self.cfg.early_stopping_patience

    def _log(self, metrics: dict) -> None:
        if self.d.main:
            with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")

    def _trim_log(self, step: int) -> None:
        """After a resume, drop log lines of steps that will be run again."""
        path = self.out / "metrics.jsonl"
        if self.d.main and path.is_file():
            lines = [l for l in path.read_text(encoding="utf-8").splitlines()
                     if l.strip() and json.loads(l).get("step", 0) <= step]
            path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
