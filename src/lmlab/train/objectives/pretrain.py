"""Pretraining: next-token prediction on every token, plus the Mixture-of-Experts balancing loss."""

from __future__ import annotations

from lmlab.model.moe import aux_loss, expert_load, moe_layers
from lmlab.train.objectives import sft


def loss(model, batch) -> tuple:
    total, count, metrics = sft.loss(model, batch)
    layers = moe_layers(model)
    if not layers:
        return total, count, metrics
    aux = aux_loss(model)
    load = expert_load(model)  # [layers, experts]
    # The trainer divides the summed loss by the token count, so the balancing term is scaled by
    # it too: the update then carries aux_loss_coef * aux, as in Switch and Mixtral.
    total = total + model.config.aux_loss_coef * aux * count
    return total, count, {**metrics, **balance(load), "aux_loss": aux.item(),
                          "dropped": sum(m.dropped for m in layers) / len(layers)}


def balance(load) -> dict:
    """expert_max_load: the busiest expert's share times the number of experts, averaged over
    layers: 1.0 is perfect balance, E means one expert takes every token."""
    return {"expert_max_load": float(load.max(-1).values.mean() * load.shape[-1])}
