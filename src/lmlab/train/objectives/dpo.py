"""Direct preference optimisation (Rafailov et al. 2023) and variants, over pairs.

With h = log pi(y|x) - log pi_ref(y|x) for the chosen (c) and rejected (r) answer:
- sigmoid: -log sigmoid(beta (h_c - h_r)); with label_smoothing e the conservative DPO
  -(1-e) log sigmoid(beta d) - e log sigmoid(-beta d) for labels flipped with probability e;
- robust (Chowdhury et al. 2024): the unbiased version, (-(1-e) log s(beta d) + e log s(-beta d)) / (1-2e);
- ipo (Azar et al. 2023): (h_c/|y_c| - h_r/|y_r| - 1/(2 beta))^2, per-token averages as TRL uses.
The reference is a frozen model, the adapter-disabled model itself with LoRA (no second copy),
or log-probs computed once before training (`ref_logps` in the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmlab.errors import LmlabError
from lmlab.train.objectives import responses as R
from lmlab.train.trainer import _to

LOSSES = ("sigmoid", "robust", "ipo")


def collate(items, pad_id: int = 0) -> dict:
    batch = R.pack([(r.prompt, r.responses) for r in items], pad_id)
    if all(r.ref_logps is not None for r in items):
        batch["ref_logps"] = torch.tensor([x for r in items for x in r.ref_logps], dtype=torch.float)
    return batch


def sequence_logps(model, batch) -> torch.Tensor:
    """log pi(response | prompt) for every response of a packed batch: [S]."""
    return R.per_sequence(R.token_logps(model, batch), batch)


@torch.no_grad()
def reference_logps(model, batch, reference=None) -> torch.Tensor:
    """The reference policy's log-probs: a separate frozen model, or with LoRA the same model
    with its adapters switched off."""
    if reference is not None:
        return sequence_logps(reference, batch)
    from lmlab.model.peft.lora import lora_disabled, lora_modules

    if not lora_modules(model):
        raise LmlabError("DPO needs a reference: train with LoRA, give a reference model, or precompute "
                         "reference log-probs")
    with lora_disabled(model):
        return sequence_logps(model, batch)


class DPO:
    def __init__(self, beta: float = 0.1, loss: str = "sigmoid", label_smoothing: float = 0.0, reference=None):
        if loss not in LOSSES:
            raise LmlabError(f"unknown DPO loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if beta <= 0:
            raise LmlabError(f"DPO beta must be > 0, got {beta}")
        if not 0 <= label_smoothing < 0.5:
            raise LmlabError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.loss, self.eps, self.reference = beta, loss, label_smoothing, reference

    def log_ratios(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_chosen, h_rejected): policy minus reference log-probs."""
        logps = sequence_logps(model, batch)
        ref = batch.get("ref_logps")
        if ref is None:
            ref = reference_logps(model, batch, self.reference)
        h = logps - ref
        return h[0::2], h[1::2]

    def losses(self, h_c, h_r, lengths) -> torch.Tensor:
        d, b, e = h_c - h_r, self.beta, self.eps
        if self.loss == "ipo":
            n = lengths.float()
            return (h_c / n[0::2] - h_r / n[1::2] - 1 / (2 * b)) ** 2
        if self.loss == "robust":
            return (-(1 - e) * F.logsigmoid(b * d) + e * F.logsigmoid(-b * d)) / (1 - 2 * e)
        return -(1 - e) * F.logsigmoid(b * d) - e * F.logsigmoid(-b * d)

    def __call__(self, model, batch) -> tuple:
        h_c, h_r = self.log_ratios(model, batch)
        losses = self.losses(h_c, h_r, batch["lengths"])
        return losses.sum(), len(h_c), {
            "tokens": batch["tokens"], "accuracy": (h_c > h_r).float().mean().item(),
            "reward_margin": (self.beta * (h_c - h_r)).mean().item()}

    def evaluate(self, model, examples, batch_size: int = 8) -> dict:
        """Held-out implicit-reward accuracy (ties count half) and loss."""
        device = next(model.parameters()).device
        right = total = loss_sum = 0.0
        for s in range(0, len(examples), batch_size):
            batch = _to(collate(examples[s:s + batch_size]), device)
            h_c, h_r = self.log_ratios(model, batch)
            right += float((h_c > h_r).sum() + 0.5 * (h_c == h_r).sum())
            loss_sum += float(self.losses(h_c, h_r, batch["lengths"]).sum())
            total += len(h_c)
        return {"eval_loss": loss_sum / max(total, 1), "eval_accuracy": right / max(total, 1)}


@torch.no_grad()
def precompute(model, items, reference=None, batch_size: int = 8) -> None:
    """Store each example's reference log-probs in it (one pass before training)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        batch = _to(collate(chunk), device)
        ref = reference_logps(model, batch, reference).tolist()
        for i, r in enumerate(chunk):
            r.ref_logps = ref[2 * i:2 * i + 2]
    model.train(was)
