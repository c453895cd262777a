"""LoRA against peft: the same forward with the same weights, and adapters that travel both ways."""

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.model.peft.lora import (apply_lora, load_adapter, lora_disabled, lora_modules, merge_lora,
                                   save_adapter)

CONFIGS = {
    "llama": dict(model_type="llama", vocab_size=96, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64, tie_word_embeddings=False),
    "qwen2": dict(model_type="qwen2", vocab_size=96, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64, tie_word_embeddings=True),
}
IDS = torch.tensor([[3, 17, 42, 5, 9, 60, 2, 11]])


def _randomise(mods):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in mods.values():
            for d in (m.lora_A, m.lora_B):
                for lin in d.values():
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj", "down_proj"]])
def test_forward_equals_peft_and_adapter_round_trips(pair, tmp_path, name, targets):
    peft = pytest.importorskip("peft")
    hf, _ = pair(name)
    from lmlab.model.io.hf import load_model

    hf.save_pretrained(tmp_path / "base")
    ours = load_model(tmp_path / "base")
    apply_lora(ours, r=4, alpha=8, targets=targets)
    _randomise(lora_modules(ours))
    save_adapter(ours, tmp_path / "adapter")

    # Our adapter loads in peft and gives our logits.
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        ref = theirs(IDS).logits
        torch.testing.assert_close(ours(IDS), ref, atol=1e-5, rtol=1e-5)
    # peft's saved adapter loads back into a fresh model of ours with the same logits.
    theirs.save_pretrained(tmp_path / "peft_saved")
    again = load_adapter(load_model(tmp_path / "base"), tmp_path / "peft_saved")
    with torch.no_grad():
        torch.testing.assert_close(again(IDS), ref, atol=1e-5, rtol=1e-5)
        # Merging folds the update into the weights without changing the function.
        torch.testing.assert_close(merge_lora(again)(IDS), ref, atol=1e-5, rtol=1e-5)
    assert not lora_modules(again)
    theirs.unload()


def test_only_adapters_train_and_disabling_gives_the_base(pair, tmp_path):
    hf, _ = pair("llama")
    from lmlab.model.io.hf import load_model

    hf.save_pretrained(tmp_path / "b")
    model = load_model(tmp_path / "b")
    with torch.no_grad():
        base = model(IDS)
    apply_lora(model, r=2, alpha=4)
    _randomise(lora_modules(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    with torch.no_grad():
        assert not torch.allclose(model(IDS), base, atol=1e-4)
        with lora_disabled(model):
            torch.testing.assert_close(model(IDS), base)


def test_unknown_target_is_an_error(pair, tmp_path):
    hf, _ = pair("llama")
    from lmlab.model.io.hf import load_model

    hf.save_pretrained(tmp_path / "b")
    with pytest.raises(LmlabError, match="nope"):
        apply_lora(load_model(tmp_path / "b"), targets=["q_proj", "nope"])


def test_lora_dropout_drops_at_its_rate_keeps_the_expectation_and_follows_the_seed():
    from lmlab.model.peft.lora import Dropout

    d = Dropout(0.05)
    x = torch.ones(1000, 1000)
    torch.manual_seed(0)
    y = d(x)
    assert abs(float((y == 0).float().mean()) - 0.05) < 2e-3  # ~4 sigma for 1e6 draws
    assert abs(float(y.mean()) - 1.0) < 2e-3
    torch.manual_seed(0)
    assert torch.equal(d(x), y)
    assert torch.equal(d.eval()(x), x)
    x = torch.randn(7, 3, requires_grad=True)
    d.train()(x).sum().backward()
    assert all(g == 0 or g == pytest.approx(65536 / (65536 - 3277)) for g in x.grad.flatten().tolist())


@pytest.mark.parametrize("onednn", [True, False])
def test_frozen_base_through_either_gemm_gives_the_same_output_and_gradients(monkeypatch, onednn):
    """On non-Intel CPUs the frozen fp32 base multiplies through oneDNN (forward and input
    gradient); forced on or off here, both must equal the plain layer's."""
    from torch import nn

    from lmlab.cpu.onednn import frozen_through_onednn
    from lmlab.model.peft import lora

    torch.manual_seed(0)
    base = nn.Linear(48, 40)
    if onednn:
        frozen_through_onednn(base)  # as lmlab.cpu.optimize does where oneDNN is preferred
    m = lora.LoRALinear(base, [("q_proj", 40)], {"q_proj"}, r=4, alpha=8)
    nn.init.normal_(m.lora_B["q_proj"].weight)
    ref = nn.Linear(48, 40)
    ref.load_state_dict(base.state_dict())
    x = torch.randn(3, 7, 48, requires_grad=True)
    y = m(x)
    assert ("_onednn" in base.__dict__) == onednn
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    y2 = ref(x2) + m.scaling * (x2 @ m.lora_A["q_proj"].weight.t()) @ m.lora_B["q_proj"].weight.t()
    y2.square().sum().backward()
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-4)
    assert base.weight.grad is None  # the base stays frozen
    with torch.no_grad():  # a changed weight is packed again, not served stale
        base.weight.mul_(2)
        torch.testing.assert_close(lora._frozen(base, x), x @ base.weight.t() + base.bias,
                                   rtol=1e-5, atol=1e-5)
    parent = nn.Sequential(m)
    merge_lora(parent)
    assert "_onednn" not in parent[0].__dict__  # merging drops the packed copies of the old weight
