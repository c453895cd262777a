"""Run one update of TRL's PPOTrainer (trl <= 0.24; trl 1.x removed it) on tiny models and fixed
rollouts; print its policy and value losses and save what our side needs to recompute them.

    PYTHONPATH=/path/to/unpacked/trl-0.24 python tests/train/trl_ppo_reference.py OUT_DIR k1|k3

Generation is replaced by fixed responses (full length, so no stop token or padding is involved)
and fixed "sampling" logits that differ from the policy's own, so the probability ratio is not 1.
The value model's trunk is a copy of the policy's, as our value head sits on the policy's trunk.
"""

from __future__ import annotations

import copy
import json
import os
import sys

os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from trl.trainer import ppo_trainer  # noqa: E402
from trl.trainer.ppo_config import PPOConfig  # noqa: E402

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
QUERIES = [[5, 6, 7], [8, 9, 10]]
RESPONSES = [[11, 12, 13, 14], [15, 16, 17, 18]]
SETTINGS = dict(kl_coef=0.05, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95)


def model(seed: int, seqcls: bool = False):
    c = transformers.AutoConfig.for_model("llama", **TINY)
    c._attn_implementation = "eager"
    if seqcls:
        c.num_labels, c.pad_token_id = 1, 0
    torch.manual_seed(seed)
    cls = transformers.AutoModelForSequenceClassification if seqcls else transformers.AutoModelForCausalLM
    m = cls.from_config(c)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m.eval()


def main(out: str, estimator: str) -> None:
    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(62)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")
    policy, ref, reward, value = model(1), model(0), model(2, True), model(3, True)
    value.model.load_state_dict(policy.model.state_dict())
    qr = torch.cat([torch.tensor(QUERIES), torch.tensor(RESPONSES)], 1)
    P = len(QUERIES[0])
    with torch.no_grad():
        noise = torch.randn(2, len(RESPONSES[0]), TINY["vocab_size"], generator=torch.Generator().manual_seed(5))
        logits = policy(qr).logits[:, P - 1:-1] + noise
    ppo_trainer.batch_generation = lambda *a, **k: (qr, logits.clone())
    args = PPOConfig(output_dir=out, per_device_train_batch_size=2, gradient_accumulation_steps=1, num_mini_batches=1,
                     num_ppo_epochs=1, total_episodes=2, response_length=len(RESPONSES[0]), stop_token=None,
                     kl_estimator=estimator, report_to="none", use_cpu=True, bf16=False, temperature=1.0,
                     local_rollout_forward_batch_size=2, missing_eos_penalty=None, num_sample_generations=0,
                     save_strategy="no", **SETTINGS)
    trainer = ppo_trainer.PPOTrainer(args=args, processing_class=tokenizer, model=copy.deepcopy(policy),
                                     ref_model=copy.deepcopy(ref), reward_model=copy.deepcopy(reward),
                                     value_model=copy.deepcopy(value),
                                     train_dataset=datasets.Dataset.from_dict({"input_ids": QUERIES}))
    seen = {}
    trainer.log = lambda metrics, *a: seen.update(metrics)
    trainer.train()
    # our side loads causal LMs: the reward model's trunk goes into one with an unused output layer
    trunk = model(9)
    trunk.model.load_state_dict(reward.model.state_dict())
    for name, m in (("policy", policy), ("ref", ref), ("reward", trunk)):
        m.save_pretrained(f"{out}/{name}")
    torch.save({"logits": logits, "value_head": value.score.weight.data, "reward_head": reward.score.weight.data},
               f"{out}/tensors.pt")
    json.dump({"queries": QUERIES, "responses": RESPONSES, "settings": SETTINGS, "pg_loss": seen["loss/policy_avg"],
               "vf_loss": seen["loss/value_avg"]}, open(f"{out}/trl.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
