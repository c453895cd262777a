"""PPO for RLHF (Ziegler et al. 2019, InstructGPT): the pieces of one update.

Per response token t the reward is -kl_coef * KL_t to the reference policy, plus the reward
model's score at the last token; a value head on the policy's trunk predicts the return; GAE
(gamma, lambda) gives advantages, whitened over the rollout. The update minimises, per token,
    max(-A r, -A clip(r, 1-e, 1+e)) + vf_coef * 0.5 max((V - R)^2, (clip(V, V_old +- c) - R)^2)
with r the probability ratio to the rollout policy, as TRL's PPOTrainer does. Rollouts and the
loop around them are in lmlab.train.rl.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmlab.errors import LmlabError
from lmlab.train.objectives import responses as R


@dataclass
class Rollout:
    """One prompt's sampled responses and what the update needs, per response token (flat over
    the responses, in order)."""
    prompt: list[int]
    responses: list[list[int]]
    old_logps: list[float]
    ref_logps: list[float]
    advantages: list[float]
    values: list[float] | None = None
    returns: list[float] | None = None


class PolicyValue(R.OnTrunk):
    """The policy and a value head on its trunk: one model for both (LoRA trains them together)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm, self.config = lm, lm.config
        self.value_head = nn.Linear(lm.config.dim, 1, bias=False).to(next(lm.parameters()).device)
        nn.init.zeros_(self.value_head.weight)  # values start at 0: early advantages are plain returns

    def forward(self, batch: dict, temperature: float = 1.0):
        """(log-prob, entropy, value) of every response token, flat."""
        h = R.hidden_states(self.lm, batch)
        logps, entropy = R.token_logps(self.lm, batch, h, temperature, entropy=True)
        return logps, entropy, self.value_head(h[batch["pred"]]).squeeze(-1).float()


# ---- rewards and advantages ----------------------------------------------------------------------

def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(policy || reference) estimates on the policy's samples (Schulman's k1, k3)."""
    log_ratio = ref_logps - logps
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return log_ratio.exp() - 1 - log_ratio
    raise LmlabError(f"kl_estimator must be k1 or k3, got {estimator!r}")


def gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Generalised advantage estimation over one response; the value after the last token is 0."""
    adv, last = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        following = values[t + 1] if t + 1 < len(values) else 0.0
        last = rewards[t] + gamma * following - values[t] + gamma * lam * last
        adv[t] = last
    return adv, [a + v for a, v in zip(adv, values)]


def whiten(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (unbiased) variance, as TRL's masked_whiten."""
    return (x - x.mean()) * torch.rsqrt(x.var() + 1e-8)


class KLController:
    """Fixed KL coefficient, or adaptive towards a target KL per response (Ziegler et al. 2019):
    coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon after each rollout of n responses."""

    def __init__(self, coef: float, target: float = 0.0, horizon: int = 10000):
        self.coef, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target > 0:
            error = min(max(kl / self.target - 1, -0.2), 0.2)
            self.coef *= 1 + error * n / self.horizon


# ---- the update ----------------------------------------------------------------------------------

def policy_loss(logps, old_logps, advantages, clip: float):
    """Per-token clipped surrogate, and where the clip was active."""
    ratio = (logps - old_logps).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def value_loss(values, old_values, returns, clip: float):
    """Per-token clipped value loss, and where the clip was active."""
    v_clipped = torch.clamp(values, old_values - clip, old_values + clip)
    unclipped, clipped = (values - returns) ** 2, (v_clipped - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), clipped > unclipped


def collate(items: list[Rollout], pad_id: int = 0) -> dict:
    batch = R.pack([(r.prompt, r.responses) for r in items], pad_id)
    for key in ("old_logps", "ref_logps", "advantages", "values", "returns"):
        if getattr(items[0], key) is not None:
            batch[key] = torch.tensor([x for r in items for x in getattr(r, key)], dtype=torch.float)
    return batch


def make_loss(clip: float = 0.2, clip_value: float = 0.2, vf_coef: float = 0.1, temperature: float = 1.0):
    def loss(model: PolicyValue, batch) -> tuple:
        logps, entropy, values = model(batch, temperature)
        pg, pg_clipped = policy_loss(logps, batch["old_logps"], batch["advantages"], clip)
        vf, vf_clipped = value_loss(values, batch["values"], batch["returns"], clip_value)
        n = len(logps)
        return (pg + vf_coef * vf).sum(), n, {
            "tokens": batch["tokens"], "policy_loss": pg.mean().item(), "value_loss": vf.mean().item(),
            "clip_fraction": pg_clipped.float().mean().item(), "value_clip_fraction": vf_clipped.float().mean().item(),
            "entropy": entropy.mean().item(),
            "approx_kl": (0.5 * (logps - batch["old_logps"]) ** 2).mean().item(), **batch.get("stats", {})}
    return loss
