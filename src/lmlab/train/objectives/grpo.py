"""GRPO (Shao et al. 2024, DeepSeekMath): PPO without a value model. K responses are sampled
per prompt; each response's advantage is its reward standardised within its group,
(r - mean) / (std + 1e-4), shared by all of its tokens. The loss per token is PPO's clipped
surrogate plus beta * k3 KL to the reference, averaged over each response's tokens and then
over responses (TRL's loss_type="grpo"). The tokens were sampled by the rollout policy, so the
KL estimate is weighted by the probability ratio pi / pi_rollout (importance sampling; TRL's
default use_bias_correction_kl).
"""

from __future__ import annotations

import torch

from lmlab.train.objectives import responses as R
from lmlab.train.objectives.ppo import kl_penalty, policy_loss


def group_advantages(rewards: list[float], k: int) -> list[float]:
    """Rewards of consecutive groups of k responses, standardised within each group."""
    r = torch.tensor(rewards, dtype=torch.float).view(-1, k)
    std = r.std(dim=1, keepdim=True) if k > 1 else torch.zeros_like(r[:, :1])
    return ((r - r.mean(dim=1, keepdim=True)) / (std + 1e-4)).flatten().tolist()


def make_loss(clip: float = 0.2, beta: float = 0.04, temperature: float = 1.0):
    def loss(model, batch) -> tuple:
        logps, entropy = R.token_logps(model, batch, temperature=temperature, entropy=True)
        per_token, clipped = policy_loss(logps, batch["old_logps"], batch["advantages"], clip)
        kl = kl_penalty(logps, batch["ref_logps"], "k3") * (logps - batch["old_logps"]).exp()
        if beta:
            per_token = per_token + beta * kl
        per_response = R.per_sequence(per_token, batch) / batch["lengths"].to(per_token.dtype)
        return per_response.sum(), len(per_response), {
            "tokens": batch["tokens"], "clip_fraction": clipped.float().mean().item(),
            "entropy": entropy.mean().item(), "kl_per_token": kl.mean().item(), **batch.get("stats", {})}
    return loss
