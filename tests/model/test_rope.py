"""RoPE frequencies and rotations equal the transformers reference for every rope_type we accept."""

from __future__ import annotations

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.model.rope import Rotary, apply_rotary, inv_frequencies

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 512}
CASES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": LLAMA3,
    "llama3_other_factors": dict(LLAMA3, factor=32.0, low_freq_factor=2.0, high_freq_factor=8.0,
                                 original_max_position_embeddings=2048),
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024},
    "yarn_betas": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 2048,
                   "beta_fast": 16, "beta_slow": 2},
    "yarn_attention_factor": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
                              "attention_factor": 1.25},
    "yarn_no_original_length": {"rope_type": "yarn", "factor": 2.0},  # falls back to max_position_embeddings
    "yarn_factor_one": {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": 1024},
}
MAX_POS = 4096


def _hf_config(head_dim: int, theta: float, scaling: dict | None):
    transformers = pytest.importorskip("transformers")
    rope = {"rope_type": "default"} if scaling is None else dict(scaling)
    rope["rope_theta"] = theta
    return transformers.LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                                    max_position_embeddings=MAX_POS, rope_parameters=rope)


def _reference(head_dim: int, theta: float, scaling: dict | None):
    """(inv_freq, attention_factor) from transformers' own rope initialisers."""
    pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = _hf_config(head_dim, theta, scaling)
    kind = config.rope_parameters["rope_type"]
    fn = LlamaRotaryEmbedding.compute_default_rope_parameters if kind == "default" else ROPE_INIT_FUNCTIONS[kind]
    return fn(config)


@pytest.mark.parametrize("head_dim,theta", [(64, 10000.0), (128, 500000.0), (16, 1e6)])
@pytest.mark.parametrize("case", list(CASES))
def test_inv_frequencies_match_transformers(case, head_dim, theta):
    scaling = CASES[case]
    ref_inv, ref_attn = _reference(head_dim, theta, scaling)
    inv, attn = inv_frequencies(head_dim, theta, scaling, MAX_POS)
    assert inv.shape == (head_dim // 2,)
    assert inv.dtype == torch.float32
    torch.testing.assert_close(inv, ref_inv.float(), rtol=1e-6, atol=0)
    assert attn == pytest.approx(ref_attn, rel=1e-12)


@pytest.mark.parametrize("case", ["linear", "llama3", "yarn"])
def test_scaling_actually_changes_frequencies(case):
    # The cases above would not notice a rescaling silently ignored if it were a no-op.
    base, _ = inv_frequencies(64, 10000.0, None, MAX_POS)
    scaled, _ = inv_frequencies(64, 10000.0, CASES[case], MAX_POS)
    assert not torch.allclose(base, scaled)
    assert torch.all(scaled <= base)  # every rescaling only ever slows rotations down


def test_yarn_default_attention_factor_grows_with_log_factor():
    _, attn = inv_frequencies(64, 10000.0, CASES["yarn"], MAX_POS)
    assert attn == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1.0)
    assert inv_frequencies(64, 10000.0, CASES["yarn_attention_factor"], MAX_POS)[1] == 1.25


def test_explicit_default_rope_type_equals_no_scaling():
    inv, _ = inv_frequencies(32, 10000.0, {"rope_type": "default"}, MAX_POS)
    torch.testing.assert_close(inv, inv_frequencies(32, 10000.0, None, MAX_POS)[0])


def test_yarn_attention_factor_uses_mscale_and_mscale_all_dim():
    scaling = dict(CASES["yarn"], mscale=1.0, mscale_all_dim=1.0)  # DeepSeek-V3 style: factor cancels out
    ref_inv, ref_attn = _reference(64, 10000.0, scaling)
    inv, attn = inv_frequencies(64, 10000.0, scaling, MAX_POS)
    torch.testing.assert_close(inv, ref_inv.float(), rtol=1e-6, atol=0)
    assert attn == pytest.approx(ref_attn, rel=1e-12)


@pytest.mark.parametrize("kind", ["dynamic", "longrope", "su", "nonsense"])
def test_unknown_rope_type_raises_lmlab_error_naming_it(kind):
    with pytest.raises(LmlabError, match=kind):
        inv_frequencies(64, 10000.0, {"rope_type": kind, "factor": 2.0}, MAX_POS)


@pytest.mark.parametrize("case", ["default", "llama3", "yarn_attention_factor", "yarn"])
def test_rotary_cos_sin_match_transformers(case):
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    head_dim = 32
    config = _hf_config(head_dim, 10000.0, CASES[case])
    ref = LlamaRotaryEmbedding(config)
    ours = Rotary(head_dim, 10000.0, CASES[case], MAX_POS)
    positions = torch.tensor([[0, 1, 2, 700, 1500, 4000], [5, 3, 0, 0, 9, 2047]])
    x = torch.zeros(2, 6, head_dim)
    ref_cos, ref_sin = ref(x, positions)  # [B, T, hd], attention factor already applied
    cos, sin = ours(positions, torch.float32)  # [B, T, 1, hd]
    assert cos.shape == (2, 6, 1, head_dim)
    torch.testing.assert_close(cos[:, :, 0], ref_cos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sin[:, :, 0], ref_sin, rtol=1e-5, atol=1e-5)


def test_apply_rotary_matches_transformers_rotate_half_layout():
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 6, 16), torch.randn(2, 2, 6, 16)  # transformers' [B, heads, T, hd]
    cos, sin = Rotary(16, 10000.0, None, 64)(torch.arange(6).expand(2, 6), torch.float32)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos[:, :, 0], sin[:, :, 0])
    ours = apply_rotary(torch.cat([q, k], 1).transpose(1, 2), cos, sin).transpose(1, 2)  # q and k heads at once
    torch.testing.assert_close(ours, torch.cat([ref_q, ref_k], 1))


def test_rotation_preserves_norm_and_depends_only_on_relative_position():
    torch.manual_seed(0)
    rot = Rotary(16, 10000.0, None, 512)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def at(x, pos):
        cos, sin = rot(torch.tensor([[pos]]), torch.float32)
        return apply_rotary(x, cos, sin)

    assert at(q, 37).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)
    dot = lambda a, b: (at(q, a) * at(k, b)).sum().item()  # noqa: E731
    assert dot(10, 3) == pytest.approx(dot(107, 100), abs=1e-4)
