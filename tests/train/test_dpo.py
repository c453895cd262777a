"""DPO: the loss against TRL's DPOTrainer on identical batches and weights, the LoRA reference,
precomputed reference log-probs."""

from __future__ import annotations

import copy

import pytest
import torch

from lmlab.train.objectives import dpo
from lmlab.train.preference import Ranked

RECORDS = [  # word-level text: every word is one token of the tiny tokenizer
    {"prompt": "w3 w4 w5 ", "chosen": "w6 w7", "rejected": "w8 w9 w10 w11"},
    {"prompt": "w12 w13 ", "chosen": "w14 w15 w16", "rejected": "w17"},
    {"prompt": "w20 w21 w22 w23 w24 ", "chosen": "w25", "rejected": "w26 w27"},
]


@pytest.fixture(scope="module")
def trl_dpo(tiny, hf_tokenizer, tmp_path_factory):
    """TRL's DPOTrainer on copies of the tiny policy and reference, and its batch of RECORDS."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    policy, ref = copy.deepcopy(tiny("policy", 1)[0]), copy.deepcopy(tiny("ref", 0)[0])
    args = trl.DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl_dpo")), beta=0.1, report_to="none",
                         use_cpu=True, bf16=False, per_device_train_batch_size=len(RECORDS), max_length=None)
    trainer = trl.DPOTrainer(policy, ref_model=ref, args=args, processing_class=hf_tokenizer,
                             train_dataset=datasets.Dataset.from_list(RECORDS))
    rows = [trainer.train_dataset[i] for i in range(len(RECORDS))]
    return trainer, rows


def _ours(rows):
    """The same tokenised pairs as TRL's, as our examples."""
    return [Ranked(r["prompt_ids"], [r["chosen_ids"], r["rejected_ids"]]) for r in rows]


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_loss_matches_trl_dpo_trainer(trl_dpo, tiny, loss):
    trainer, rows = trl_dpo
    trainer.loss_types, trainer.loss_weights = [loss], [1.0]
    batch = trainer.data_collator(rows)
    trainer.model.train()
    expected = trainer.compute_loss(trainer.model, batch)

    objective = dpo.DPO(beta=0.1, loss=loss, reference=tiny("ref", 0)[1])
    total, count, metrics = objective(tiny("policy", 1)[1], dpo.collate(_ours(rows)))
    assert count == len(RECORDS)
    assert abs(float(total) / count - float(expected)) < 1e-5
    assert abs(float(expected)) > 1e-3  # the models differ, so the comparison means something


def test_frozen_output_layer_through_onednn_gives_the_same_loss_and_gradients(tiny, monkeypatch):
    """With LoRA the output layer is frozen, so on CPUs where oneDNN is preferred it multiplies
    through oneDNN (lmlab.cpu.onednn); the loss and the adapters' gradients must not change."""
    from lmlab.cpu import features, optimize
    from lmlab.model.peft.lora import apply_lora

    model = copy.deepcopy(tiny("policy", 1)[1])
    apply_lora(model, r=4, alpha=8)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # a policy away from its reference
    batch = dpo.collate([Ranked([3, 4, 5], [[6, 7], [8, 9, 10]]), Ranked([12, 13], [[14], [15, 16]])])
    results = []
    for onednn in (False, True):
        if onednn:  # the plain layers first, then the speed layer applied as a Trainer applies it
            monkeypatch.setattr(features, "onednn_preferred", lambda: True)
            optimize(model, "cpu", "train")
        model.zero_grad()
        total, _, _ = dpo.DPO(beta=0.1)(model, batch)
        total.backward()
        assert ("_onednn" in model.lm_head.__dict__) == onednn
        results.append((total.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (loss0, grads0), (loss1, grads1) = results
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-6)
    for g0, g1 in zip(grads0, grads1):
        torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-6)
