"""Reward model: the loss against TRL's RewardTrainer on identical batches and weights; pair
accuracy; combining reward models."""

from __future__ import annotations

import copy

import pytest
import torch

from lmlab.train import reward_model
from lmlab.train.objectives import reward
from lmlab.train.preference import Ranked

RECORDS = [
    {"prompt": "w3 w4 w5 ", "chosen": "w6 w7", "rejected": "w8 w9 w10 w11", "margin": 0.5},
    {"prompt": "w12 w13 ", "chosen": "w14 w15 w16", "rejected": "w17", "margin": 0.0},
    {"prompt": "w20 w21 w22 w23 w24 ", "chosen": "w25", "rejected": "w26 w27", "margin": 1.0},
]


def _split(chosen: list[int], rejected: list[int], margin: float) -> Ranked:
    n = 0
    while chosen[n] == rejected[n]:
        n += 1
    return Ranked(chosen[:n], [chosen[n:], rejected[n:]], margin=margin)


@pytest.fixture(scope="module")
def models(tiny):
    """(transformers sequence classifier, our RewardModel) with the same trunk and score head."""
    transformers = pytest.importorskip("transformers")
    hf_lm, ours_lm, _ = tiny("ref", 0)
    config = copy.deepcopy(hf_lm.config)
    config.num_labels, config.pad_token_id = 1, 0
    hf = transformers.AutoModelForSequenceClassification.from_config(config)
    hf.model.load_state_dict(hf_lm.model.state_dict())
    torch.manual_seed(3)
    hf.score.weight.data.normal_(0, 0.5)
    head = torch.nn.Linear(config.hidden_size, 1, bias=False)
    head.weight.data.copy_(hf.score.weight.data)
    return hf, reward_model.RewardModel(copy.deepcopy(ours_lm), head)


@pytest.mark.parametrize("center", [None, 0.01])
def test_loss_matches_trl_reward_trainer(models, hf_tokenizer, tmp_path, center):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    hf, ours = models
    args = trl.RewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                            center_rewards_coefficient=center, per_device_train_batch_size=len(RECORDS))
    trainer = trl.RewardTrainer(copy.deepcopy(hf), args=args, processing_class=hf_tokenizer,
                                train_dataset=datasets.Dataset.from_list(RECORDS))
    rows = [trainer.train_dataset[i] for i in range(len(RECORDS))]
    batch = trainer.data_collator(rows)
    expected = float(trainer.compute_loss(trainer.model, batch))

    items = [_split(r["chosen_ids"], r["rejected_ids"], r["margin"]) for r in rows]
    total, count, metrics = reward.make_loss(center or 0.0)(ours, reward.collate(items))
    assert count == len(RECORDS)
    assert abs(float(total) / count - expected) < 1e-5
    assert 0 <= metrics["accuracy"] <= 1


def test_pair_accuracy_counts_pairs_the_model_orders_right(models):
    _, rm = models
    items = [Ranked([5, 6], [[7, 8], [9]]), Ranked([10], [[11], [12, 13]]), Ranked([14, 15, 16], [[17], [18]])]
    with torch.no_grad():
        r = rm(reward.collate(items))
    expected = float((r[0::2] > r[1::2]).float().mean())
    assert reward.pair_accuracy(rm, items, batch_size=2)["eval_accuracy"] == pytest.approx(expected)
    # swapping chosen and rejected turns every right answer wrong
    swapped = [Ranked(x.prompt, x.responses[::-1]) for x in items]
    assert reward.pair_accuracy(rm, swapped)["eval_accuracy"] == pytest.approx(1 - expected)


def test_score_equals_separate_forward_passes(models):
    """A packed row (prompt once, several responses) gives each response the reward that a
    forward pass over prompt + that response alone gives."""
    _, rm = models
    packed = rm.score([([5, 6, 7], [[8, 9], [10], [11, 12, 13]])])
    alone = [rm.score([([5, 6, 7], [r])])[0] for r in ([8, 9], [10], [11, 12, 13])]
    assert packed == pytest.approx(alone, abs=1e-5)


def test_combined_rewards_sum_with_weights_or_gate_on_safety():
    helpful = lambda items: [1.0, 2.0]
    safety = lambda items: [-1.0, 0.5]
    assert reward_model.Combined([helpful, safety], [1.0, 2.0])([None, None]) == [-1.0, 3.0]
    # Llama 2: an unsafe answer (safety score under the threshold) gets the safety score
    assert reward_model.Combined([helpful, safety], how="gate", threshold=0.0)([None, None]) == [-1.0, 2.0]
