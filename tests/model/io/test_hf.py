"""HF folders: what we write, transformers reads with the same logits; what we read, we read right,
including sharded checkpoints and transformers-5 configs; broken folders fail with a clear LmlabError."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import lmlab.model.io.folder as folder_mod
from lmlab.errors import LmlabError
from lmlab.model.config import ModelConfig
from lmlab.model.io.hf import load_model, read_config, save_model
from lmlab.model.transformer import Transformer

VOCAB = 97
BASE = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, max_seq_len=64)
FAMILIES = {
    "llama": ModelConfig(**BASE),
    "llama_wide_heads_ids": ModelConfig(**BASE, head_dim=16, norm_eps=1e-6, bos_token_id=1, eos_token_id=[2, 3],
                                        pad_token_id=0),
    "llama_rope_llama3": ModelConfig(**dict(BASE, dim=64), rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
    "qwen2": ModelConfig(**BASE, model_type="qwen2", qkv_bias=True, tie_embeddings=True, rope_theta=1e6),
    "mistral": ModelConfig(**BASE, model_type="mistral", sliding_window=5),
    "gpt2": ModelConfig(**dict(BASE, n_kv_heads=4, ffn_dim=128), family="gpt2", model_type="gpt2",
                        tie_embeddings=True),
}
SEQ = 40


def _random_ours(c: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(c)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def _ids(batch=2, n=SEQ):
    return torch.randint(0, VOCAB, (batch, n), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def _maxdiff(a, b):
    return (a - b).abs().max().item()


def _modelled(c: ModelConfig) -> dict:
    """Every ModelConfig field but `extra` (the config.json keys we carry without modelling)."""
    d = c.to_dict()
    del d["extra"]
    return d


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (our random model, the folder save_model wrote for it); built once per module."""
    built = {}

    def get(name):
        if name not in built:
            model = _random_ours(FAMILIES[name])
            built[name] = model, save_model(model, tmp_path_factory.mktemp(name) / "out")
        return built[name]

    return get


# ---- writing: transformers reads what we write ----------------------------------------------

@pytest.mark.parametrize("name", list(FAMILIES))
def test_saved_folder_loads_in_transformers_with_same_logits(saved, name):
    transformers = pytest.importorskip("transformers")
    ours, path = saved(name)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert ref.config.model_type == FAMILIES[name].model_type
    ids = _ids()
    assert _maxdiff(_logits(ours, ids), _logits(ref, ids)) <= 1e-4


@pytest.mark.parametrize("name", list(FAMILIES))
def test_saved_folder_reloads_bit_identically(saved, name):
    ours, path = saved(name)
    back = load_model(path)
    assert _modelled(back.config) == _modelled(ours.config)
    ids = _ids()
    assert torch.equal(_logits(back, ids), _logits(ours, ids))


def test_tied_embeddings_are_written_once_and_tied_on_load(saved):
    _, path = saved("qwen2")
    names = set(load_file(str(path / "model.safetensors")))
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    back = load_model(path)
    assert back.lm_head.weight is back.embed.weight


def test_gpt2_weights_use_hf_names_and_fused_conv1d_layout(saved):
    ours, path = saved("gpt2")
    tensors = load_file(str(path / "model.safetensors"))
    c_attn = tensors["transformer.h.0.attn.c_attn.weight"]
    assert c_attn.shape == (32, 3 * 32)  # Conv1D: [in, out], q|k|v along out
    assert torch.equal(c_attn, ours.layers[0].attn.qkv_proj.weight.t())


def test_save_model_records_dtype_and_can_cast(tmp_path):
    model = _random_ours(FAMILIES["llama"])
    path = save_model(model, tmp_path / "bf16", dtype=torch.bfloat16)
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_file(str(path / "model.safetensors"))["model.norm.weight"].dtype == torch.bfloat16


def test_save_model_copies_tokenizer_files(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"model": {}}')
    (tok / "chat_template.jinja").write_text("{{ messages }}")
    (tok / "unrelated.txt").write_text("no")
    path = save_model(_random_ours(FAMILIES["llama"]), tmp_path / "out", tokenizer_folder=tok)
    assert (path / "tokenizer.json").read_text() == '{"model": {}}'
    assert (path / "chat_template.jinja").read_text() == "{{ messages }}"
    assert not (path / "unrelated.txt").exists()


# ---- sharding ------------------------------------------------------------------------------------

@pytest.fixture
def sharded(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_mod, "SHARD_BYTES", 16 * 1024)
    model = _random_ours(FAMILIES["llama"])
    return model, save_model(model, tmp_path / "sharded")


def test_large_checkpoint_is_written_as_indexed_shards(sharded):
    model, path = sharded
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert not (path / "model.safetensors").exists()
    assert len(shards) >= 3
    assert sorted(set(index["weight_map"].values())) == shards
    written = {}
    for name in shards:
        written.update(load_file(str(path / name)))
    assert set(index["weight_map"]) == set(written)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in written.values())
    assert all(index["weight_map"][k] == f for f in shards for k in load_file(str(path / f)))


def test_sharded_checkpoint_loads_with_same_logits(sharded):
    model, path = sharded
    ids = _ids()
    assert torch.equal(_logits(load_model(path), ids), _logits(model, ids))


def test_sharded_checkpoint_loads_in_transformers(sharded):
    transformers = pytest.importorskip("transformers")
    model, path = sharded
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = _ids()
    assert _maxdiff(_logits(ref, ids), _logits(model, ids)) <= 1e-4


# ---- reading: broken folders --------------------------------------------------------------------

@pytest.fixture
def good_folder(tmp_path):
    return save_model(_random_ours(FAMILIES["llama"]), tmp_path / "good")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors_raises_lmlab_error_naming_the_file(good_folder, damage):
    f = good_folder / "model.safetensors"
    if damage == "garbage":
        f.write_bytes(b"\x8f\x02 this is not a safetensors file at all" * 10)
    else:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(LmlabError, match="model.safetensors") as e:
        load_model(good_folder)
    assert "corrupt" in str(e.value)


def test_unsupported_model_type_raises_lmlab_error_naming_it(good_folder):
    (good_folder / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": 10}))
    with pytest.raises(LmlabError, match="'bert'") as e:
        load_model(good_folder)
    assert "BertForMaskedLM" in str(e.value) and "llama" in str(e.value)


def test_missing_layer_weight_raises_lmlab_error_naming_it(good_folder):
    f = good_folder / "model.safetensors"
    tensors = load_file(str(f))
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, str(f))
    with pytest.raises(LmlabError, match=r"missing.*layers\.1\.mlp\.down_proj\.weight"):
        load_model(good_folder)


def test_folder_without_config_raises_lmlab_error(tmp_path):
    with pytest.raises(LmlabError, match="config.json"):
        load_model(tmp_path)


def test_folder_without_safetensors_raises_lmlab_error(good_folder):
    (good_folder / "model.safetensors").unlink()
    with pytest.raises(LmlabError, match="safetensors"):
        load_model(good_folder)


def test_invalid_config_json_raises_lmlab_error(good_folder):
    (good_folder / "config.json").write_text("{not json")
    with pytest.raises(LmlabError, match="invalid JSON"):
        read_config(good_folder)


def test_load_model_casts_to_requested_dtype(good_folder):
    model = load_model(good_folder, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.rotary.inv_freq.device.type == "cpu"  # rebuilt off the meta device


# ---- config.json <-> ModelConfig ---------------------------------------------------------------

@pytest.mark.parametrize("name", list(FAMILIES))
def test_model_config_round_trips_through_hf_config(name):
    c = FAMILIES[name]
    back = ModelConfig.from_hf(c.to_hf())
    assert _modelled(back) == _modelled(c)
    # Keys we do not model are kept in `extra` and written back unchanged: a second trip is exact.
    assert ModelConfig.from_hf(back.to_hf()) == back
    assert back.to_hf() == c.to_hf()


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "mistral", "gpt2"])
def test_transformers_config_dict_is_read_exactly(model_type):
    transformers = pytest.importorskip("transformers")
    if model_type == "gpt2":
        hf = transformers.GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=3, n_head=6, n_positions=128,
                                     layer_norm_epsilon=1e-6, bos_token_id=5, eos_token_id=6)
        c = ModelConfig.from_hf(hf.to_dict())
        assert (c.family, c.dim, c.n_layers, c.n_heads, c.ffn_dim, c.max_seq_len, c.norm_eps) == \
            ("gpt2", 48, 3, 6, 4 * 48, 128, 1e-6)
        assert (c.bos_token_id, c.eos_token_id, c.tie_embeddings) == (5, 6, True)
        return
    hf = transformers.AutoConfig.for_model(
        model_type, vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, head_dim=16, intermediate_size=40, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=[2, 3], pad_token_id=0)
    c = ModelConfig.from_hf(hf.to_dict())
    assert (c.family, c.model_type, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim) == \
        ("llama", model_type, 48, 3, 6, 2, 16, 40)
    assert (c.max_seq_len, c.norm_eps, c.tie_embeddings) == (256, 1e-5, True)
    assert (c.bos_token_id, c.eos_ids, c.pad_token_id) == (1, [2, 3], 0)
    assert c.qkv_bias == (model_type == "qwen2")


def test_transformers5_rope_parameters_are_read():
    transformers = pytest.importorskip("transformers")
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    hf = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters=dict(rope)).to_dict()
    assert "rope_parameters" in hf and "rope_scaling" not in hf and "rope_theta" not in hf
    c = ModelConfig.from_hf(hf)
    assert c.rope_theta == 500000.0
    assert c.rope_scaling == {k: v for k, v in rope.items() if k != "rope_theta"}


def test_transformers5_default_rope_parameters_mean_no_scaling():
    c = ModelConfig.from_hf({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "intermediate_size": 8,
                             "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})
    assert c.rope_theta == 1e6 and c.rope_scaling is None


def test_legacy_rope_scaling_with_type_key_is_normalised():
    c = ModelConfig.from_hf({"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "intermediate_size": 8, "rope_theta": 50000.0,
                             "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert c.rope_theta == 50000.0
    assert c.rope_scaling["rope_type"] == "linear" and c.rope_scaling["factor"] == 2.0


def test_qwen2_sliding_window_ignored_unless_enabled():
    base = {"model_type": "qwen2", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 8, "sliding_window": 4096}
    assert ModelConfig.from_hf(dict(base, use_sliding_window=False)).sliding_window is None
    assert ModelConfig.from_hf(dict(base, use_sliding_window=True)).sliding_window == 4096


def test_llama_q_k_v_and_gate_up_are_fused_in_order_and_split_back(tmp_path):
    """Our qkv_proj is [q; k; v] and gate_up_proj is [gate; up]; writing splits them again."""
    transformers = pytest.importorskip("transformers")
    from lmlab.model.io.hf import hf_to_ours, ours_to_hf, read_config

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2)
    hf = transformers.LlamaForCausalLM(cfg)
    hf.save_pretrained(tmp_path)
    c = read_config(tmp_path)
    hf_state = {k: v.detach() for k, v in hf.state_dict().items()}
    ours = hf_to_ours(hf_state, c)
    a = "model.layers.0.self_attn."
    assert torch.equal(ours["layers.0.attn.qkv_proj.weight"],
                       torch.cat([hf_state[a + p + ".weight"] for p in ("q_proj", "k_proj", "v_proj")]))
    assert torch.equal(ours["layers.0.mlp.gate_up_proj.weight"],
                       torch.cat([hf_state["model.layers.0.mlp." + p + ".weight"] for p in ("gate_proj", "up_proj")]))
    back = ours_to_hf(ours, c)
    assert set(back) == set(hf_state) and all(torch.equal(back[k], hf_state[k]) for k in back)
