"""PRO: the listwise ranking loss with reward-gap temperatures and its SFT term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmlab.train.objectives import pro
from lmlab.train.preference import Ranked


def test_two_responses_without_scores_is_bradley_terry():
    s = torch.tensor([-1.2, -0.4])
    assert float(pro.ranking_loss(s, None)) == pytest.approx(float(-F.logsigmoid(s[0] - s[1])))


def test_reward_gaps_set_the_temperatures():
    s, r = torch.tensor([-1.0, -2.0, -0.5]), [3.0, 2.0, 0.0]
    # k = 1: gaps 1 and 3, T_1^1 = min(1/1, 1/3) = 1/3; k = 2: gap 2, T_2^2 = 1/2
    first = -(3 * s[0] - torch.logsumexp(torch.stack([3 * s[0], 1 * s[1], 3 * s[2]]), 0))
    second = -(2 * s[1] - torch.logsumexp(torch.stack([2 * s[1], 2 * s[2]]), 0))
    assert float(pro.ranking_loss(s, r)) == pytest.approx(float(first + second))


def test_loss_adds_the_sft_term_and_counts_rankings(tiny):
    model = tiny("policy", 1)[1]
    items = [Ranked([5, 6], [[7, 8], [9], [10, 11, 12]], scores=[2.0, 1.0, 0.0]), Ranked([13], [[14], [15, 16]])]
    batch = pro.collate(items)
    with torch.no_grad():
        with_sft, n, metrics = pro.make_loss(sft_weight=1.0)(model, batch)
        without, _, _ = pro.make_loss(sft_weight=0.0)(model, batch)
        from lmlab.train.objectives import responses as R
        s = R.per_sequence(R.token_logps(model, batch), batch) / batch["lengths"]
    assert n == 2
    assert float(with_sft - without) == pytest.approx(float(-(s[0] + s[3])), abs=1e-5)  # the best of each list
    assert metrics["top1_accuracy"] in (0.0, 0.5, 1.0)
