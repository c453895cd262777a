"""One PPO update against TRL's own PPOTrainer code: the same rollouts (fixed responses and
sampling log-probs), the same weights, then rewards with the KL penalty, GAE, whitening and the
clipped policy and value losses on both sides, to 1e-5.

trl 1.x removed PPOTrainer, so TRL's side runs in a subprocess on an older trl that still has it:
`make test` installs trl 0.24 into .venv/trl-ppo (pip install --no-deps --target); LMLAB_TRL_PPO
names another such folder. Without one the test is skipped; the clipped surrogate alone is checked against trl 1.x in
test_ppo.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmlab.train.objectives import ppo
from lmlab.train.objectives import responses as R

_DEFAULT = Path(__file__).resolve().parents[2] / ".venv" / "trl-ppo"
TRL_PPO = os.environ.get("LMLAB_TRL_PPO") or (str(_DEFAULT) if _DEFAULT.is_dir() else None)


@pytest.mark.skipif(not TRL_PPO, reason="no trl <= 0.24 (PPOTrainer): make install, or set LMLAB_TRL_PPO")
@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_one_ppo_update_matches_trl_ppo_trainer(tmp_path, estimator):
    from lmlab.model.io.hf import load_model
    from lmlab.train.reward_model import RewardModel

    env = {**os.environ, "PYTHONPATH": TRL_PPO}
    script = Path(__file__).with_name("trl_ppo_reference.py")
    subprocess.run([sys.executable, str(script), str(tmp_path), estimator], check=True, env=env,
                   capture_output=True)
    trl = json.loads((tmp_path / "trl.json").read_text())
    tensors = torch.load(tmp_path / "tensors.pt")
    s = trl["settings"]

    policy = ppo.PolicyValue(load_model(tmp_path / "policy"))
    policy.value_head.weight.data.copy_(tensors["value_head"])
    ref = load_model(tmp_path / "ref")
    rm = RewardModel(load_model(tmp_path / "reward"), torch.nn.Linear(32, 1, bias=False))
    rm.head.weight.data.copy_(tensors["reward_head"])

    items = [(q, [r]) for q, r in zip(trl["queries"], trl["responses"])]
    batch = R.pack(items)
    with torch.no_grad():
        old = tensors["logits"].log_softmax(-1).gather(-1, torch.tensor(trl["responses"])[..., None]).flatten()
        _, _, values = policy(batch)
        ref_logps = R.token_logps(ref, batch)
        scores = rm(batch)
    rollouts, n = [], len(trl["responses"][0])
    for i, (q, [r]) in enumerate(items):
        sl = slice(i * n, (i + 1) * n)
        rewards = (-s["kl_coef"] * ppo.kl_penalty(old[sl], ref_logps[sl], estimator)).tolist()
        rewards[-1] += float(scores[i])
        adv, ret = ppo.gae(rewards, values[sl].tolist(), s["gamma"], s["lam"])
        rollouts.append(ppo.Rollout(q, [r], old[sl].tolist(), ref_logps[sl].tolist(), adv, values[sl].tolist(), ret))
    whitened = ppo.whiten(torch.tensor([a for x in rollouts for a in x.advantages])).tolist()
    for i, x in enumerate(rollouts):
        x.advantages = whitened[i * n:(i + 1) * n]

    loss = ppo.make_loss(s["cliprange"], s["cliprange_value"], s["vf_coef"])
    _, _, metrics = loss(policy, ppo.collate(rollouts))
    assert metrics["policy_loss"] == pytest.approx(trl["pg_loss"], abs=1e-5)
    assert metrics["value_loss"] == pytest.approx(trl["vf_loss"], abs=1e-5)
    assert abs(trl["vf_loss"]) > 1e-3 and abs(trl["pg_loss"]) > 1e-3  # both terms are really compared
