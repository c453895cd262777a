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
