"""The runs end to end on a tiny model: rm -> ppo / grpo / rsft, dpo with a LoRA reference;
outputs, logged metrics, and one base model in memory with LoRA."""

from __future__ import annotations

import json
import random

import pytest

from lmlab.config import load_config
from lmlab.train.config import TrainConfig


@pytest.fixture(scope="module")
def setup(tiny, hf_tokenizer, tmp_path_factory):
    """A tiny model folder with a tokenizer, preference data over its words, a trained LoRA RM."""
    from lmlab.train.rm import rm

    _, _, folder = tiny("base", 2)
    hf_tokenizer.save_pretrained(folder)
    rng = random.Random(0)
    rows = []
    for _ in range(24):  # the chosen answer repeats the prompt's first word: learnable
        words = rng.sample(range(3, 40), 3)
        rows.append({"prompt": " ".join(f"w{w}" for w in words), "chosen": f"w{words[0]} w{words[0]}",
                     "rejected": f"w{rng.randint(40, 60)} w{rng.randint(40, 60)}"})
    tmp = tmp_path_factory.mktemp("rl")
    data = tmp / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def config(name, **kw):
        base = {"model": str(folder), "data": str(data), "output": str(tmp / name), "chat_template": False,
                "max_length": 32, "batch_size": 4, "lr": 5e-3, "progress": False, "lora": {"r": 4, "dropout": 0.0}}
        return load_config(TrainConfig, None, None, **{**base, **kw})

    return config, tmp, rm(config("rm", max_steps=6, eval_data=str(data)))


def _metrics(path):
    return [json.loads(l) for l in (path / "metrics.jsonl").read_text().splitlines()]


def test_rm_run_writes_outputs_and_eval_accuracy(setup):
    _, tmp, result = setup
    rows = _metrics(tmp / "rm")
    assert 0 <= rows[-1]["eval_accuracy"] <= 1
    for f in ("final/reward_head.safetensors", "adapter/reward_head.safetensors", "adapter/lora_state.safetensors",
              "loss.png", "config.yaml"):
        assert (tmp / "rm" / f).is_file(), f


def test_ppo_with_lora_keeps_one_base_model_and_logs_its_curves(setup, monkeypatch):
    from lmlab.model.io import hf
    from lmlab.train import rl

    loads = []
    original = hf.load_model
    monkeypatch.setattr(hf, "load_model", lambda *a, **k: loads.append(a) or original(*a, **k))
    config, tmp, _ = setup
    cfg = config("ppo", epochs=2, eval_data=str(tmp / "prefs.jsonl"), **{"rm": {"models": [str(tmp / "rm")]}},
                 ppo={"rollout_size": 4, "max_new_tokens": 4, "eval_prompts": 4, "kl_target": 1.0})
    result = rl.ppo(cfg)
    # policy, reference (adapters off), value head and reward model (its adapter swapped in) share
    # the one base model: loading the policy is the only load before export
    assert len(loads) == 1
    rows = _metrics(tmp / "ppo")
    assert rows[0]["step"] == 0 and "eval_reward" in rows[0]  # the starting model's baseline
    for key in ("reward", "kl", "kl_coef", "length", "entropy", "clip_fraction", "value_loss", "policy_loss"):
        assert key in rows[1], key
    assert "eval_reward" in rows[-1] and "eval_kl" in rows[-1]
    assert rows[-1]["step"] == result["step"] == 2 * 2  # 2 rollouts x 2 ppo epochs x 1 step each
    assert (tmp / "ppo" / "final" / "config.json").is_file()


@pytest.mark.parametrize("method", ["lora", "feature"])
def test_reward_model_on_the_policy_trunk_scores_like_the_exported_one(setup, method):
    """A LoRA reward model (its adapter swapped in) or a probe (method feature: the policy with
    adapters off) on the policy's own trunk scores exactly like the exported reward model."""
    import torch

    from lmlab.model.io.hf import load_model
    from lmlab.model.peft.lora import apply_lora
    from lmlab.train import reward_model
    from lmlab.train.rm import rm

    config, tmp, _ = setup
    run = tmp / "rm"
    if method == "feature":
        run = tmp / "rm_probe"
        rm(config("rm_probe", max_steps=2, method="feature"))
    cfg = config("unused")
    policy = load_model(cfg.model)
    apply_lora(policy, 4, cfg.lora.alpha, 0.0)
    for name, p in policy.named_parameters():  # a trained policy: adapters away from zero
        if "lora_B" in name:
            torch.nn.init.normal_(p, 0, 0.5)
    before = {n: p.clone() for n, p in policy.named_parameters()}
    shared = reward_model.load(run, policy, cfg.model)
    assert isinstance(shared, type(lambda: 0))  # on the policy, not a loaded model's bound method
    items = [([5, 6, 7], [[8, 9], [10]]), ([11], [[12, 13, 1]])]
    assert shared(items) == pytest.approx(reward_model.load(run)(items), abs=1e-4)
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())  # swapped back


def test_grpo_run_logs_group_rollouts(setup):
    from lmlab.train import rl

    config, tmp, _ = setup
    rl.grpo(config("grpo", epochs=1, **{"rm": {"models": [str(tmp / "rm")]}},
                   ppo={"rollout_size": 4, "samples": 3, "max_new_tokens": 4, "ppo_epochs": 1}))
    rows = _metrics(tmp / "grpo")
    assert {"reward", "kl", "clip_fraction", "kl_per_token"} <= rows[-1].keys()


def test_rsft_keeps_one_best_response_per_prompt_and_fine_tunes_on_it(setup):
    from lmlab.train import rl

    config, tmp, _ = setup
    result = rl.rsft(config("rsft", max_steps=2, **{"rm": {"models": [str(tmp / "rm")]}},
                            ppo={"samples": 3, "max_new_tokens": 4}))
    kept = (tmp / "rsft" / "best_of_3.jsonl").read_text().splitlines()
    assert len(kept) == 24
    assert result["best_reward"] >= result["sample_reward"]  # the best of K is at least their mean


def test_dpo_with_lora_reference_and_with_precomputed_reference_agree(setup, monkeypatch):
    from lmlab.model.io import hf
    from lmlab.train.dpo import dpo

    loads = []
    original = hf.load_model
    monkeypatch.setattr(hf, "load_model", lambda *a, **k: loads.append(a) or original(*a, **k))
    config, tmp, _ = setup
    a = dpo(config("dpo", max_steps=3, eval_data=str(tmp / "prefs.jsonl")))
    assert len(loads) == 1  # the reference is the adapter-disabled policy, not a second model
    b = dpo(config("dpo_pre", max_steps=3, eval_data=str(tmp / "prefs.jsonl"), dpo={"precompute_ref": True}))
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert a["eval_accuracy"] == pytest.approx(b["eval_accuracy"])


@pytest.mark.parametrize("disable", [True, False])
def test_dpo_trains_without_lora_dropout_unless_asked(setup, disable):
    from torch import nn

    from lmlab.model.peft.lora import LoRALinear
    from lmlab.train import dpo

    config, _, _ = setup
    cfg = config("dpo_dropout", lora={"r": 4, "dropout": 0.1}, dpo={"disable_dropout": disable})
    model = dpo.start(cfg).model
    lora = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert lora and all(isinstance(m.dropout, nn.Identity) == disable for m in lora)
    assert cfg.lora.dropout == (0.0 if disable else 0.1)  # what the saved adapter records


def test_cli_dpo_flags_reach_the_config_and_bad_data_is_one_line(setup, capsys):
    import yaml

    from lmlab.cli.main import main

    config, tmp, _ = setup
    cfg = config("unused")
    common = ["--model", cfg.model, "--max-steps", "1", "--batch-size", "4", "--no-progress",
              "chat_template=false", "max_length=32", "lora.r=4"]
    assert main(["train", "dpo", "--data", cfg.data, "--output", str(tmp / "cli"), "--beta", "0.2", *common]) == 0
    assert yaml.safe_load((tmp / "cli" / "config.yaml").read_text())["dpo"]["beta"] == 0.2
    bad = tmp / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "w3", "chosen": "w4", "rejected": "w4"}) + "\n")
    assert main(["train", "rm", "--data", str(bad), "--output", str(tmp / "cli_bad"), *common]) == 2
    assert "bad.jsonl:1: identical responses" in capsys.readouterr().err
