"""Mixture-of-Experts feed-forward layer (Switch Transformer, Mixtral): many SwiGLU experts, a
router that sends each token to its top-k of them, a capacity per expert, and a load-balancing
loss that keeps the router from sending everything to a few experts.

Parameter names and layout are transformers' Mixtral (`gate.weight` is the router;
`experts.gate_up_proj` [E, 2F, D] and `experts.down_proj` [E, D, F]), so a saved MoE model is a
Mixtral folder that transformers loads.

After each forward the layer keeps `aux_loss` (the balancing loss, to be added to the training
loss) and `load` (the share of routed tokens each expert received), so the objective and the
evaluator can read them without the model's forward signature changing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.model.config import ModelConfig


class Router(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c.n_experts, c.dim))


class Experts(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(c.n_experts, 2 * c.ffn_dim, c.dim))
        self.down_proj = nn.Parameter(torch.empty(c.n_experts, c.dim, c.ffn_dim))


class MoE(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        from lmlab.model.transformer import ACT

        self.n_experts, self.top_k, self.capacity_factor = c.n_experts, c.experts_per_token, c.capacity_factor
        self.act = ACT[c.hidden_act]
        self.gate, self.experts = Router(c), Experts(c)
        self.aux_loss = self.load = None
        self.dropped = 0.0

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        N, E, k = x.shape[0], self.n_experts, self.top_k
        probs = F.linear(x, self.gate.weight).float().softmax(-1)  # [N, E], routing in fp32
        weight, chosen = probs.topk(k, dim=-1)  # [N, k]
        if k > 1:  # Mixtral renormalises over the chosen experts; Switch (k=1) keeps the raw
            weight = weight / weight.sum(-1, keepdim=True)  # probability so the router gets a gradient
        counts = torch.bincount(chosen.flatten(), minlength=E).float()
        self.load = counts / (N * k)
        # Switch's loss E * sum_e f_e * P_e (f: share of tokens routed to e, P: mean router
        # probability of e), with f counted over all k choices as transformers does: it is k
        # at perfect balance and grows as routing concentrates.
        self.aux_loss = E * (counts / N * probs.mean(0)).sum()
        # Capacity: each expert takes at most capacity_factor * its fair share of the token
        # choices, first come first served; the rest are dropped (the token keeps only its
        # residual). Only while training: inference routes every token, as Mixtral does.
        cap = math.ceil(self.capacity_factor * N * k / E) if self.training and self.capacity_factor else N
        out = torch.zeros_like(x)
        dropped = 0
        for e in range(E):
            token, slot = torch.where(chosen == e)
            dropped += max(0, len(token) - cap)
            token, slot = token[:cap], slot[:cap]
            if len(token) == 0:
                continue
            gate, up = F.linear(x[token], self.experts.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(self.act(gate) * up, self.experts.down_proj[e])
            out.index_add_(0, token, (y * weight[token, slot, None]).to(out.dtype))
        self.dropped = dropped / (N * k)
        return out.view(shape)


def moe_layers(model) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def aux_loss(model):
    """Mean balancing loss over the MoE layers of the last forward (0 for a dense model)."""
    layers = moe_layers(model)
    return sum(m.aux_loss for m in layers) / len(layers) if layers else 0.0


def expert_load(model) -> torch.Tensor | None:
    """[layers, experts]: share of routed tokens per expert in the last forward."""
    layers = moe_layers(model)
    return torch.stack([m.load for m in layers]) if layers else None
