"""Reward model objective (InstructGPT, Llama 2): -log sigmoid(r_chosen - r_rejected - margin) on
the rewards of a `lmlab.train.reward_model.RewardModel`, and its held-out pair accuracy.

Optional reward centering (Eisenstein et al. 2023) adds c * (r_chosen + r_rejected)^2, which keeps
rewards near zero without changing their order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmlab.train.objectives import responses as R
from lmlab.train.trainer import _to


def collate(items, pad_id: int = 0) -> dict:
    """Pairs (Ranked with two responses) packed one per row, with their margins."""
    batch = R.pack([(r.prompt, r.responses) for r in items], pad_id)
    batch["margin"] = torch.tensor([r.margin for r in items], dtype=torch.float)
    return batch


def make_loss(center: float = 0.0):
    def loss(model, batch) -> tuple:
        r = model(batch)
        chosen, rejected = r[0::2], r[1::2]
        losses = -F.logsigmoid(chosen - rejected - batch["margin"])
        if center:
            losses = losses + center * (chosen + rejected) ** 2
        acc = (chosen > rejected).float().mean().item()
        return losses.sum(), len(chosen), {"tokens": batch["tokens"], "accuracy": acc,
                                           "reward_margin": (chosen - rejected).mean().item()}
    return loss


def pair_accuracy(model, examples, batch_size: int = 8) -> dict:
    """Held-out pair accuracy (ties count half) and mean loss: an evaluate function's result."""
    device = next(model.parameters()).device
    right = total = loss_sum = 0.0
    for s in range(0, len(examples), batch_size):
        batch = _to(collate(examples[s:s + batch_size]), device)
        r = model(batch)
        chosen, rejected = r[0::2], r[1::2]
        right += float((chosen > rejected).sum() + 0.5 * (chosen == rejected).sum())
        loss_sum += float(-F.logsigmoid(chosen - rejected - batch["margin"]).sum())
        total += len(chosen)
    return {"eval_loss": loss_sum / max(total, 1), "eval_accuracy": right / max(total, 1)}
