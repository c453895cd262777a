"""The Transformer computes the same function as the transformers reference implementations,
for every family and switch we support, and its padding / caching paths change nothing."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.engine.kv_cache import KVCache
from lmlab.model.config import ModelConfig
from lmlab.model.io.hf import load_model
from lmlab.model.rope import Rotary
from lmlab.model.transformer import Transformer

TOL = 1e-4
VOCAB = 97

LLAMA = dict(model_type="llama", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64, tie_word_embeddings=False,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)
# head_dim 16 so that the rope rescalings touch low, medium and high frequencies alike.
LLAMA_ROPE = dict(LLAMA, hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
CONFIGS = {
    "llama_gqa_untied": LLAMA,
    "llama_rope_llama3": dict(LLAMA_ROPE, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "llama_rope_linear": dict(LLAMA_ROPE, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0,
                                                           "factor": 4.0}),
    "qwen2_bias_tied": dict(LLAMA, model_type="qwen2", tie_word_embeddings=True, use_sliding_window=False),
    "mistral_window": dict(LLAMA, model_type="mistral", sliding_window=5),
    "gpt2": dict(model_type="gpt2", vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                 bos_token_id=None, eos_token_id=None),
}
# Llama's attention_bias puts biases on q, k, v and o; mlp_bias on gate, up and down.
CONFIGS["llama_attention_bias"] = dict(LLAMA, attention_bias=True)
CONFIGS["llama_mlp_bias"] = dict(LLAMA, mlp_bias=True)
SEQ = 40  # beyond original_max_position_embeddings=16 and the Mistral window of 5


def _ids(n=SEQ, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, n), generator=g)


def _ref_logits(hf, ids):
    with torch.no_grad():
        return hf(ids).logits


def _maxdiff(a, b):
    return (a - b).abs().max().item()


# ---- agreement with transformers -------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers(pair, name):
    hf, ours = pair(name)
    ids = _ids(batch=2)
    with torch.no_grad():
        logits = ours(ids)
    assert logits.shape == (2, SEQ, VOCAB)
    assert _maxdiff(logits, _ref_logits(hf, ids)) <= TOL


@pytest.mark.parametrize("name", ["llama_rope_llama3", "llama_rope_linear"])
def test_rope_scaling_changes_logits_beyond_original_context(pair, name):
    # Guards the test above: with these positions, dropping the rescaling would be detected.
    _, ours = pair(name)
    ids = _ids()
    c = ours.config
    plain = Rotary(c.head_dim, c.rope_theta, None, c.max_seq_len)
    with torch.no_grad():
        scaled = ours(ids)
        saved, ours.rotary = ours.rotary, plain
        try:
            unscaled = ours(ids)
        finally:
            ours.rotary = saved
    assert _maxdiff(scaled, unscaled) > 1e-2


def test_sliding_window_changes_logits_beyond_the_window(pair):
    _, ours = pair("mistral_window")
    ids = _ids()
    with torch.no_grad():
        windowed = ours(ids)
        ours.config.sliding_window = None
        try:
            full = ours(ids)
        finally:
            ours.config.sliding_window = 5
    assert _maxdiff(windowed[:, :5], full[:, :5]) <= 1e-6  # inside the window nothing changes
    assert _maxdiff(windowed[:, 5:], full[:, 5:]) > 1e-2


def test_qwen2_biases_and_tied_head_are_loaded(pair):
    _, ours = pair("qwen2_bias_tied")
    attn = ours.layers[0].attn
    assert attn.qkv_proj.bias is not None and attn.qkv_proj.bias.abs().sum() > 0
    assert attn.o_proj.bias is None
    assert ours.lm_head.weight is ours.embed.weight


def test_qwen2_sliding_window_only_on_layers_from_max_window_layers(tmp_path, random_hf):
    hf = random_hf(dict(CONFIGS["qwen2_bias_tied"], use_sliding_window=True, sliding_window=5,
                         max_window_layers=1))
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    ids = _ids()
    with torch.no_grad():
        assert _maxdiff(ours(ids), _ref_logits(hf, ids)) <= TOL


# ---- padding, caching, last_only -----------------------------------------------------------

def _left_pad(rows: list[list[int]], pad_id: int = 0):
    """ids, key_mask and positions exactly as lmlab.engine.engine builds them."""
    L = max(map(len, rows))
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    key_mask = torch.zeros((len(rows), L), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, L - len(r):] = torch.tensor(r)
        key_mask[i, L - len(r):] = True
    positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)
    return ids, key_mask, positions


ROWS = [_ids(n, seed=n)[0].tolist() for n in (13, 4, 9, 1)]


@pytest.mark.parametrize("name", ["llama_gqa_untied", "mistral_window", "gpt2"])
def test_left_padded_batch_gives_each_row_its_own_last_logits(pair, name):
    _, ours = pair(name)
    ids, key_mask, positions = _left_pad(ROWS, pad_id=7)
    with torch.no_grad():
        batch = ours(ids, positions, key_mask, last_only=True)[:, -1]
        for i, row in enumerate(ROWS):
            alone = ours(torch.tensor([row]))[0, -1]
            assert _maxdiff(batch[i], alone) <= TOL, f"row {i} (length {len(row)})"


@pytest.mark.parametrize("name", ["llama_gqa_untied", "mistral_window", "gpt2"])
def test_kv_cached_decoding_equals_one_full_forward(pair, name):
    _, ours = pair(name)
    ids = _ids(batch=2)
    cache = KVCache(ours.config, 2, SEQ)
    with torch.no_grad():
        full = ours(ids)
        steps = [ours(ids[:, :8], cache=cache), ours(ids[:, 8:12], cache=cache)]  # prefill, then a chunk
        steps += [ours(ids[:, t:t + 1], cache=cache) for t in range(12, SEQ)]  # then one token at a time
    assert cache.length == SEQ
    assert _maxdiff(torch.cat(steps, dim=1), full) <= TOL


def test_kv_cached_decoding_of_a_left_padded_batch_matches_each_row_alone(pair):
    _, ours = pair("mistral_window")
    ids, key_mask, positions = _left_pad(ROWS)
    B, L = ids.shape
    new = _ids(n=6, batch=B, seed=5)
    key_mask = torch.cat([key_mask, torch.ones(B, new.shape[1], dtype=torch.bool)], dim=1)
    cache = KVCache(ours.config, B, L + new.shape[1])
    with torch.no_grad():
        out = [ours(ids, positions, key_mask[:, :L], cache, last_only=True)]
        for t in range(new.shape[1]):
            positions = positions[:, -1:] + 1
            out.append(ours(new[:, t:t + 1], positions, key_mask[:, :L + t + 1], cache))
        out = torch.cat(out, dim=1)  # [B, 1 + steps, V]: logits after the prompt, then after each new token
        for i, row in enumerate(ROWS):
            alone = ours(torch.tensor([row + new[i].tolist()]))[0, len(row) - 1:]
            assert _maxdiff(out[i], alone) <= TOL, f"row {i}"


@pytest.mark.parametrize("name", ["llama_gqa_untied", "gpt2"])
def test_last_only_equals_last_row_of_full_logits(pair, name):
    _, ours = pair(name)
    ids = _ids(batch=2)
    with torch.no_grad():
        last = ours(ids, last_only=True)
        full = ours(ids)
    assert last.shape == (2, 1, VOCAB)
    # one row per sequence vs all rows: the GEMM may sum in another order (AVX2 kernels do)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-6)


# ---- initialisation ----------------------------------------------------------------------------

def test_init_weights_normal_002_scaled_residuals_zero_biases_unit_norms():
    torch.manual_seed(0)
    c = ModelConfig(vocab_size=512, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=256, qkv_bias=True,
                    max_seq_len=64)
    model = Transformer(c)
    model.init_weights()
    residual_std = 0.02 / math.sqrt(2 * c.n_layers)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        elif "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            assert p.std().item() == pytest.approx(residual_std, rel=0.1), name
        else:
            assert p.std().item() == pytest.approx(0.02, rel=0.1), name
            assert abs(p.mean().item()) < 0.002, name


def test_init_weights_gpt2_layernorm_gains_one_biases_zero():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(family="gpt2", model_type="gpt2", vocab_size=256, dim=64, n_layers=2,
                                    n_heads=4, n_kv_heads=4, ffn_dim=256, max_seq_len=64, tie_embeddings=True))
    model.init_weights()
    assert torch.equal(model.norm.weight, torch.ones(64)) and torch.count_nonzero(model.norm.bias) == 0
    assert torch.equal(model.layers[1].attn_norm.weight, torch.ones(64))
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.pos_embed.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.lm_head.weight is model.embed.weight
