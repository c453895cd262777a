"""Inference weight formats: the quantisers' error bounds, loading straight into a format (block
by block) giving the same model as converting after loading, and each format's cost in logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.errors import LmlabError
from lmlab.model.config import ModelConfig
from lmlab.model.io.hf import load_model, save_model
from lmlab.model.quant import Int4Linear, Int8Linear, W8A8Linear, convert_weights
from lmlab.model.transformer import Transformer

CONFIG = dict(vocab_size=96, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=64)


def _weight_seen_by(q: nn.Module, in_features: int) -> torch.Tensor:
    """The weight a quantised linear actually multiplies by: its output for the identity."""
    with torch.no_grad():
        return q(torch.eye(in_features)).float().T


def test_int8_is_within_half_a_step_of_each_weight():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48, bias=False)
    q = Int8Linear(lin)
    step = q.scale.float()[:, None]
    err = (_weight_seen_by(q, 64) - lin.weight).abs()
    assert q.qweight.dtype == torch.int8 and q.qweight.abs().max() <= 127
    assert (err <= step / 2 + lin.weight.abs() * 2**-7 + 1e-6).all()


def test_int4_is_within_half_a_step_of_each_weight_in_its_group():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48, bias=False)
    q = Int4Linear(lin, group=32)
    step = q.scales_and_zeros[..., 0].float().T.repeat_interleave(32, dim=1)  # [out, in]
    err = (_weight_seen_by(q, 64) - lin.weight).abs()
    assert (err <= step / 2 + lin.weight.abs() * 2**-7 + 1e-6).all()


def test_w8a8_is_the_integer_product_of_row_quantised_activations_and_weights():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    q = W8A8Linear(lin)
    x = torch.randn(5, 64) * torch.tensor([1.0, 10.0, 0.1, 3.0, 0.0])[:, None]  # one row all zeros
    with torch.no_grad():
        y = q(x)
    sx = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
    xq = (x / sx).round().clamp(-127, 127)
    exact = (xq.double() @ q.qweight.double().T) * sx.double() * q.scale.double() + q.bias.double()
    assert torch.allclose(y.double(), exact, rtol=1e-5, atol=1e-5)
    assert torch.equal(y[4], q.bias.float())  # a zero row stays zero (no division by zero)
    # within a few quantisation steps of the fp32 layer
    assert (y - lin(x)).abs().max() < 0.05 * lin(x).abs().max()
    assert q.qweight.dtype == torch.int8 and q.qweight.abs().max() <= 127


def test_int4_needs_groups_that_divide_the_inputs():
    with pytest.raises(LmlabError, match="divisible by 32"):
        Int4Linear(nn.Linear(40, 8))


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def folder(request, tmp_path_factory):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**CONFIG, tie_embeddings=request.param))
    return save_model(model, tmp_path_factory.mktemp("quant") / "m")


@pytest.mark.parametrize("fmt", ["bf16", "int8", "w8a8", "int4"])
def test_loading_into_a_format_equals_converting_after_loading(folder, fmt):
    direct = load_model(folder, weights=fmt).state_dict()
    after = convert_weights(load_model(folder), fmt).state_dict()
    assert direct.keys() == after.keys()
    assert all(torch.equal(direct[k], after[k]) for k in direct)
    if fmt != "bf16":  # the head is quantised even when tied; the embedding is not
        assert "lm_head.qweight" in direct
        assert direct["embed.weight"].dtype == (torch.float32 if fmt == "w8a8" else torch.bfloat16)


def test_unknown_format_is_refused_before_loading(folder):
    with pytest.raises(LmlabError, match="unknown weight format 'int3'"):
        load_model(folder, weights="int3")


# ---- the cost of each format on the real model -------------------------------------------------------

TEXT = ("Rivers shape the land they cross in ways that are slow to see but easy to measure. Water that "
        "falls as rain or melts from snow gathers in small channels, and these channels join to form "
        "streams and then rivers. As the water moves downhill, it carries sand, silt and small stones.")


@pytest.fixture(scope="module")
def reference(bundled_folder):
    from lmlab.tokenizer import Tokenizer

    ids = torch.tensor([Tokenizer.from_folder(bundled_folder).encode(TEXT)])
    with torch.inference_mode():
        return ids, load_model(bundled_folder)(ids)[0].float().log_softmax(-1)


# mean KL(fp32 || format) per position, and the share of positions whose argmax is fp32's
# (measured on this text: bf16 0.002 / 1.0, int8 0.008 / 0.97, w8a8 0.056 / 0.83, int4 0.064 / 0.90)
BOUNDS = {"bf16": (0.005, 0.95), "int8": (0.025, 0.9), "w8a8": (0.15, 0.7), "int4": (0.15, 0.8)}


@pytest.mark.parametrize("fmt", list(BOUNDS))
def test_format_logits_stay_close_to_fp32(bundled_folder, reference, fmt):
    ids, ref = reference
    with torch.inference_mode():
        logp = load_model(bundled_folder, weights=fmt)(ids)[0].float().log_softmax(-1)
    kl = (ref.exp() * (ref - logp)).sum(-1).mean().item()
    agree = (logp.argmax(-1) == ref.argmax(-1)).float().mean().item()
    max_kl, min_agree = BOUNDS[fmt]
    assert kl < max_kl and agree > min_agree, (kl, agree)


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_prompt_sized_inputs_take_the_dequantised_path_with_the_same_weight(cls):
    # Many rows (a prompt) multiply by the weight dequantised to fp32, one row (decoding) runs the
    # fused kernel: both must see the same quantised weight, up to bf16 rounding of the output.
    from lmlab.model.quant import DEQUANT_ROWS

    torch.manual_seed(0)
    q = cls(nn.Linear(128, 192, bias=False))
    n = q.dequant_rows if cls is Int8Linear else DEQUANT_ROWS["int4"]
    x = torch.randn(n, 128).bfloat16()
    with torch.no_grad():
        many = q(x).float()
        one_by_one = torch.cat([q(x[i:i + 1]) for i in range(n)]).float()
    assert (many - one_by_one).abs().max() <= 0.02 * one_by_one.abs().max()
    if cls is Int4Linear:
        w = q.dequantised()
        assert torch.allclose(_weight_seen_by(q, 128), w, atol=1e-3)  # the kernel's own weight


def test_w8a8_warns_on_a_cpu_without_vnni_and_not_on_one_with_it(monkeypatch):
    import warnings

    from lmlab.model import quant

    def warned(flags, fmt="w8a8"):
        monkeypatch.setattr(quant, "cpu_flags", lambda: frozenset(flags))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quant.check_format(fmt)
        return [str(w.message) for w in seen]

    assert any("no VNNI" in m for m in warned({"avx2", "fma"}))
    assert warned({"avx2", "avx512_vnni"}) == []
    assert warned({"avx2", "fma"}, "int8") == []


@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_the_linear_it_packs(bias):
    from lmlab.model.quant import PackedLinear

    torch.manual_seed(0)
    lin = nn.Linear(64, 96, bias=bias)
    packed = PackedLinear(lin)
    assert not hasattr(packed, "weight") or packed.weight is None  # the plain weight is not kept
    assert torch.equal(packed.dequantised(), lin.weight)
    for shape in [(1, 64), (7, 64), (2, 300, 64)]:  # a decoded row, a few streams, a prompt batch
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(packed(x), lin(x), rtol=1e-5, atol=1e-5)


def test_onednn_is_preferred_on_non_intel_cpus_only(monkeypatch):
    from lmlab.model import quant

    for vendor, expected in [("AuthenticAMD", True), ("HygonGenuine", True), ("GenuineIntel", False), (None, False)]:
        monkeypatch.setattr(quant, "_cpuinfo", lambda: {} if vendor is None else {"vendor_id": vendor})
        assert quant.onednn_preferred() is (expected and torch.backends.mkldnn.is_available())


def test_a_packed_linear_saves_the_plain_weight_under_linears_name():
    from lmlab.model.quant import PackedLinear

    lin = nn.Linear(16, 8)
    state = PackedLinear(lin).state_dict()
    assert set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], lin.weight) and torch.equal(state["bias"], lin.bias)


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_linear_multiplies_through_onednn_only_a_frozen_weight(monkeypatch, frozen):
    """frozen_linear: a frozen fp32 weight goes through oneDNN (forward and input gradient) with
    the same results as the plain layer; a trained weight takes the plain path and gets its grad."""
    from lmlab.model import quant

    monkeypatch.setattr(quant, "onednn_preferred", lambda: True)
    torch.manual_seed(0)
    lin = nn.Linear(40, 300)  # wide, as the output layer
    lin.weight.requires_grad_(not frozen)
    x = torch.randn(2, 9, 40, requires_grad=True)
    y = quant.frozen_linear(lin, x)
    assert ("_onednn" in lin.__dict__) == frozen
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    (x2 @ lin.weight.detach().t() + lin.bias.detach()).square().sum().backward()
    torch.testing.assert_close(y, lin(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-4)
    assert (lin.weight.grad is None) == frozen
    quant.drop_packed(lin)
    assert "_onednn" not in lin.__dict__
