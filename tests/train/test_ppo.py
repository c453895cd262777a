"""PPO and GRPO: the losses against TRL's code on the same rollouts and weights; GAE, KL
estimators, the adaptive KL coefficient and group advantages."""

from __future__ import annotations

import copy

import pytest
import torch

from lmlab.train.objectives import grpo, ppo

PROMPTS = [[5, 6, 7], [8, 9, 10]]  # equal lengths: TRL left-pads prompts, we need no padding
COMPLETIONS = [[11, 12, 13, 1], [14, 15]]


@pytest.fixture(scope="module")
def trl_grpo(tiny, hf_tokenizer, tmp_path_factory):
    """A real GRPOTrainer on a copy of the tiny policy, and a function running its loss."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    args = trl.GRPOConfig(output_dir=str(tmp_path_factory.mktemp("trl_grpo")), report_to="none", use_cpu=True,
                          bf16=False, per_device_train_batch_size=2, num_generations=2, max_completion_length=4)
    trainer = trl.GRPOTrainer(copy.deepcopy(tiny("policy", 1)[0]), reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                              args=args, processing_class=hf_tokenizer,
                              train_dataset=datasets.Dataset.from_list([{"prompt": "w3 w4"}] * 2))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1

    def run(loss_type, beta, advantages, old, ref=None, clip=0.2):
        trainer.loss_type, trainer.beta, trainer.epsilon_low, trainer.epsilon_high = loss_type, beta, clip, clip
        T = max(map(len, COMPLETIONS))
        inputs = {"prompt_ids": torch.tensor(PROMPTS), "prompt_mask": torch.ones(2, 3, dtype=torch.long),
                  "completion_ids": torch.tensor([c + [0] * (T - len(c)) for c in COMPLETIONS]),
                  "completion_mask": torch.tensor([[1] * len(c) + [0] * (T - len(c)) for c in COMPLETIONS]),
                  "advantages": advantages, "old_per_token_logps": old}
        if ref is not None:
            inputs["ref_per_token_logps"] = ref
        return float(trainer._compute_loss(trainer.model, inputs))

    return run


def _padded(flat: torch.Tensor) -> torch.Tensor:
    T = max(map(len, COMPLETIONS))
    out, at = torch.zeros(len(COMPLETIONS), T), 0
    for i, c in enumerate(COMPLETIONS):
        out[i, :len(c)] = flat[at:at + len(c)]
        at += len(c)
    return out


def _rollouts(old, ref, adv, values=None, returns=None):
    items, at = [], 0
    for p, c in zip(PROMPTS, COMPLETIONS):
        sl = slice(at, at + len(c))
        items.append(ppo.Rollout(p, [c], old[sl].tolist(), ref[sl].tolist(), adv[sl].tolist(),
                                 None if values is None else values[sl].tolist(),
                                 None if returns is None else returns[sl].tolist()))
        at += len(c)
    return ppo.collate(items)


def _current_logps(tiny):
    from lmlab.train.objectives import responses as R

    with torch.no_grad():
        return R.token_logps(tiny("policy", 1)[1], R.pack([(p, [c]) for p, c in zip(PROMPTS, COMPLETIONS)]))


def test_ppo_policy_loss_matches_trl_clipped_surrogate(trl_grpo, tiny):
    """TRL's GRPOTrainer loss with per-token advantages, no KL and token-mean ("bnpo") is PPO's
    clipped surrogate; old log-probs away from the current ones make the clip bite."""
    n = sum(map(len, COMPLETIONS))
    torch.manual_seed(0)
    current = _current_logps(tiny)
    old = current + torch.randn(n) * 0.5
    adv = torch.randn(n)
    expected = trl_grpo("bnpo", 0.0, _padded(adv), _padded(old))

    model = ppo.PolicyValue(copy.deepcopy(tiny("policy", 1)[1]))
    zeros = torch.zeros(n)
    total, count, metrics = ppo.make_loss(clip=0.2, vf_coef=0.0)(model, _rollouts(old, old, adv, zeros, zeros))
    assert abs(float(total) / count - expected) < 1e-5
    assert 0 < metrics["clip_fraction"] < 1


def test_grpo_loss_matches_trl_with_kl_term(trl_grpo, tiny):
    n = sum(map(len, COMPLETIONS))
    torch.manual_seed(1)
    current = _current_logps(tiny)
    old, ref = current + torch.randn(n) * 0.3, current + torch.randn(n) * 0.3
    seq_adv = torch.tensor([1.3, -0.7])
    expected = trl_grpo("grpo", 0.04, seq_adv, _padded(old), _padded(ref))

    adv = torch.cat([seq_adv[i].repeat(len(c)) for i, c in enumerate(COMPLETIONS)])
    total, count, _ = grpo.make_loss(clip=0.2, beta=0.04)(tiny("policy", 1)[1], _rollouts(old, ref, adv))
    assert abs(float(total) / count - expected) < 1e-5


def test_value_loss_is_clipped_around_the_rollout_values():
    values = torch.tensor([0.0, 1.0, 3.0])
    old = torch.tensor([0.0, 0.0, 0.0])
    returns = torch.tensor([1.0, 1.0, 1.0])
    loss, clipped = ppo.value_loss(values, old, returns, clip=0.5)
    # 0: clipped prediction 0 is as far as 0; 1: unclipped 0, clipped 0.5 -> 0.25; 2: max(4, 0.25)
    assert loss.tolist() == pytest.approx([0.5, 0.125, 2.0])
    assert clipped.tolist() == [False, True, False]


def test_gae_with_lambda_one_is_the_return_minus_the_value():
    rewards, values = [0.1, -0.2, 1.0], [0.5, 0.3, 0.2]
    adv, ret = ppo.gae(rewards, values, gamma=1.0, lam=1.0)
    assert ret == pytest.approx([0.9, 0.8, 1.0])
    assert adv == pytest.approx([0.4, 0.5, 0.8])
    adv0, _ = ppo.gae(rewards, values, gamma=0.9, lam=0.0)  # lambda 0: one-step TD errors
    assert adv0 == pytest.approx([0.1 + 0.9 * 0.3 - 0.5, -0.2 + 0.9 * 0.2 - 0.3, 1.0 - 0.2])


def test_kl_estimators_k1_and_k3():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert ppo.kl_penalty(logp, ref, "k1").tolist() == pytest.approx([0.5, -1.0])
    r = ref - logp
    assert ppo.kl_penalty(logp, ref, "k3").tolist() == pytest.approx((r.exp() - 1 - r).tolist())
    assert (ppo.kl_penalty(logp, ref, "k3") >= 0).all()  # k3 is never negative


def test_adaptive_kl_coefficient_moves_towards_the_target():
    c = ppo.KLController(0.1, target=6.0, horizon=100)
    c.update(kl=12.0, n=10)  # too far from the reference: penalise more (error clipped to 0.2)
    assert c.coef == pytest.approx(0.1 * 1.02)
    c.update(kl=3.0, n=10)
    assert c.coef == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = ppo.KLController(0.1)
    fixed.update(kl=100.0, n=10)
    assert fixed.coef == 0.1


def test_group_advantages_are_standardised_within_each_group():
    adv = grpo.group_advantages([1.0, 3.0, 5.0, 5.0], k=2)
    s = float(torch.tensor([1.0, 3.0]).std())
    assert adv[:2] == pytest.approx([-1 / (s + 1e-4), 1 / (s + 1e-4)])
    assert adv[2:] == [0.0, 0.0]  # a group with equal rewards teaches nothing


def test_whitened_advantages_have_zero_mean_unit_variance():
    x = ppo.whiten(torch.tensor([1.0, 2.0, 4.0, 9.0]))
    assert float(x.mean()) == pytest.approx(0, abs=1e-6) and float(x.var()) == pytest.approx(1, abs=1e-4)
