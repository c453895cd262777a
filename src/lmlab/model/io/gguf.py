"""Read a llama.cpp GGUF file into Hugging Face form, and write it out as an HF model folder.

A GGUF carries everything a model folder does, spelled llama.cpp's way: the config as metadata
keys, the weights under llama.cpp names (often quantised), and the tokenizer as a token list with
merges. `read_gguf` turns each of those back into what transformers would have written:
a `config.json` dict, float32 tensors under HF parameter names in HF layout, a `tokenizer.json`
and a `tokenizer_config.json`. `convert_gguf` saves that with `save_hf_folder`.

Supported model architectures: llama (also Mistral and SmolLM2, which llama.cpp writes as llama),
qwen2 and gpt2. Supported tokenizers: byte-level BPE ("gpt2") and SentencePiece BPE ("llama").
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from lmlab.errors import LmlabError
from lmlab.model.io.folder import save_hf_folder

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gpt2")

_SHORT_ARRAY = 16  # arrays up to this length are kept in `GGUFModel.metadata`


@dataclass
class GGUFModel:
    """A GGUF file's contents in HF terms; see the module docstring."""

    path: Path
    hf_config: dict
    tensors: dict[str, torch.Tensor]
    tokenizer_json: str
    tokenizer_config: dict
    generation_config: dict
    metadata: dict


def read_gguf(path: str | os.PathLike, *, load_tensors: bool = True) -> GGUFModel:
    """Read `path`. With `load_tensors=False` the weights are skipped (`tensors` is empty)."""
    path = Path(path)
    reader = _open(path)
    fields = _read_fields(reader, path)
    arch = _architecture(fields, path)
    stored = {t.name: t for t in reader.tensors}
    config = _CONFIG_BUILDERS[arch](fields, {name: _torch_shape(t) for name, t in stored.items()}, path)
    if "rope_freqs.weight" in stored:
        config["rope_scaling"] = _llama3_rope_scaling(_dequantize(stored["rope_freqs.weight"], path), config, path)
    hf_names = {name: _hf_name(arch, name, path) for name in stored if name not in _NOT_PARAMETERS}
    tensors = {}
    for name, hf_name in hf_names.items() if load_tensors else ():
        tensors[hf_name] = _to_hf_layout(arch, hf_name, _dequantize(stored[name], path), config)
    return GGUFModel(
        path=path,
        hf_config=config,
        tensors=tensors,
        tokenizer_json=_build_tokenizer(fields, path).to_str(pretty=True),
        tokenizer_config=_tokenizer_config(fields, config),
        generation_config=_generation_config(config),
        metadata=_plain_metadata(fields),
    )


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the GGUF at `path` as an HF model folder at `out_dir` (replacing it) and return it."""
    model = read_gguf(path)
    return save_hf_folder(
        out_dir,
        model.hf_config,
        model.tensors,
        tokenizer_files={"tokenizer.json": model.tokenizer_json,
                         "tokenizer_config.json": model.tokenizer_config},
        generation_config=model.generation_config,
    )


# --- file and metadata -------------------------------------------------------------------------

def _open(path: Path) -> gguf.GGUFReader:
    if not path.is_file():
        raise LmlabError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise LmlabError(f"{path}: cannot read the file ({exc.strerror})") from exc
    if magic != b"GGUF":
        raise LmlabError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # a damaged file surfaces as whatever numpy or the parser trips on
        raise LmlabError(f"{path}: corrupt or truncated GGUF file ({_one_line(exc)})") from exc


def _read_fields(reader: gguf.GGUFReader, path: Path) -> dict:
    try:
        return {name: field.contents() for name, field in reader.fields.items()}
    except Exception as exc:
        raise LmlabError(f"{path}: corrupt GGUF metadata ({_one_line(exc)})") from exc


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _architecture(fields: dict, path: Path) -> str:
    arch = fields.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise LmlabError(f"{path}: GGUF architecture {arch!r} is not supported "
                         f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    return arch


def _require(fields: dict, key: str, path: Path):
    if key not in fields:
        raise LmlabError(f"{path}: GGUF metadata lacks {key!r}")
    return fields[key]


def _plain_metadata(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if not isinstance(v, list) or len(v) <= _SHORT_ARRAY}


# --- config ------------------------------------------------------------------------------------

def _common_config(fields: dict, shapes: dict, path: Path) -> dict:
    if "token_embd.weight" not in shapes:
        raise LmlabError(f"{path}: GGUF file has no token_embd.weight tensor")
    config = {
        "vocab_size": shapes["token_embd.weight"][0],
        # llama.cpp writes the output projection only when it is not the embedding matrix
        "tie_word_embeddings": "output.weight" not in shapes,
        "torch_dtype": "float32",
    }
    for name, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                      ("pad_token_id", "padding_token_id")):
        if f"tokenizer.ggml.{key}" in fields:
            config[name] = fields[f"tokenizer.ggml.{key}"]
    return config


def _decoder_config(fields: dict, shapes: dict, path: Path) -> dict:
    """llama and qwen2: RMSNorm, rotary attention with grouped KV heads, gated SiLU MLP."""
    arch = fields["general.architecture"]
    key = lambda name: _require(fields, f"{arch}.{name}", path)  # noqa: E731
    hidden, heads = key("embedding_length"), key("attention.head_count")
    config = {
        "model_type": arch,
        "architectures": [_HF_CLASSES[arch]],
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": fields.get(f"{arch}.attention.head_count_kv", heads),
        # rotary covers the whole head in these architectures, so its width is the head size
        "head_dim": fields.get(f"{arch}.attention.key_length",
                               fields.get(f"{arch}.rope.dimension_count", hidden // heads)),
        "max_position_embeddings": key("context_length"),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon"),
        "rope_theta": fields.get(f"{arch}.rope.freq_base", 10000.0),
        "hidden_act": "silu",
    }
    if arch == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in shapes
        config["mlp_bias"] = "blk.0.ffn_up.bias" in shapes
    if (scaling := _rope_scaling(fields, arch)) is not None:
        config["rope_scaling"] = scaling
    return config | _common_config(fields, shapes, path)


def _rope_scaling(fields: dict, arch: str) -> dict | None:
    prefix = f"{arch}.rope.scaling."
    kind = fields.get(prefix + "type", "none")
    if kind not in ("linear", "yarn"):
        return None
    scaling = {"rope_type": kind, "factor": fields.get(prefix + "factor", 1.0)}
    if kind == "yarn":
        for gguf_key, hf_key in (("original_context_length", "original_max_position_embeddings"),
                                 ("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
            if prefix + gguf_key in fields:
                scaling[hf_key] = fields[prefix + gguf_key]
    return scaling


def _llama3_factors(scaling: dict, theta: float, head_dim: int) -> np.ndarray:
    """The per-frequency divisors that Llama 3.1's rope scaling applies (as in HF and llama.cpp)."""
    factor, old_len = scaling["factor"], scaling["original_max_position_embeddings"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelen = 2 * math.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
    smooth = np.clip((old_len / wavelen - low) / (high - low), 0.0, 1.0)
    return 1 / ((1 - smooth) / factor + smooth)


def _llama3_rope_scaling(rope_factors: torch.Tensor, config: dict, path: Path) -> dict:
    """Recover HF's `rope_scaling` from the `rope_freqs` tensor llama.cpp writes in its place.

    The tensor is fixed by the factor and two wavelength thresholds (original length over the low
    and over the high frequency factor), so any setting that reproduces it gives the same rotary
    frequencies. We try the usual ones.
    """
    found = rope_factors.numpy().astype(np.float64)
    for old_len in (8192, 4096, 2048, 16384, 32768, 65536, 131072):
        for high in (4.0, 2.0, 8.0):
            scaling = {"rope_type": "llama3", "factor": float(found.max()), "low_freq_factor": 1.0,
                       "high_freq_factor": high, "original_max_position_embeddings": old_len}
            expected = _llama3_factors(scaling, config["rope_theta"], config["head_dim"])
            if expected.shape == found.shape and np.allclose(expected, found, rtol=1e-4):
                return scaling
    raise LmlabError(f"{path}: cannot recover the rope scaling its rope_freqs tensor encodes")


def _gpt2_config(fields: dict, shapes: dict, path: Path) -> dict:
    key = lambda name: _require(fields, f"gpt2.{name}", path)  # noqa: E731
    config = {
        "model_type": "gpt2",
        "architectures": [_HF_CLASSES["gpt2"]],
        "n_embd": key("embedding_length"),
        "n_inner": key("feed_forward_length"),
        "n_layer": key("block_count"),
        "n_head": key("attention.head_count"),
        "n_positions": key("context_length"),
        "layer_norm_epsilon": key("attention.layer_norm_epsilon"),
    }
    return config | _common_config(fields, shapes, path)


_HF_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gpt2": "GPT2LMHeadModel"}
_CONFIG_BUILDERS = {"llama": _decoder_config, "qwen2": _decoder_config, "gpt2": _gpt2_config}


# --- tensors -----------------------------------------------------------------------------------

_DECODER_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "blk.{n}.attn_norm": "model.layers.{n}.input_layernorm",
    "blk.{n}.ffn_norm": "model.layers.{n}.post_attention_layernorm",
    "blk.{n}.attn_q": "model.layers.{n}.self_attn.q_proj",
    "blk.{n}.attn_k": "model.layers.{n}.self_attn.k_proj",
    "blk.{n}.attn_v": "model.layers.{n}.self_attn.v_proj",
    "blk.{n}.attn_output": "model.layers.{n}.self_attn.o_proj",
    "blk.{n}.ffn_gate": "model.layers.{n}.mlp.gate_proj",
    "blk.{n}.ffn_up": "model.layers.{n}.mlp.up_proj",
    "blk.{n}.ffn_down": "model.layers.{n}.mlp.down_proj",
}
_GPT2_NAMES = {
    "token_embd": "transformer.wte",
    "position_embd": "transformer.wpe",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
    "blk.{n}.attn_norm": "transformer.h.{n}.ln_1",
    "blk.{n}.attn_qkv": "transformer.h.{n}.attn.c_attn",
    "blk.{n}.attn_output": "transformer.h.{n}.attn.c_proj",
    "blk.{n}.ffn_norm": "transformer.h.{n}.ln_2",
    "blk.{n}.ffn_up": "transformer.h.{n}.mlp.c_fc",
    "blk.{n}.ffn_down": "transformer.h.{n}.mlp.c_proj",
}
_NAMES = {"llama": _DECODER_NAMES, "qwen2": _DECODER_NAMES, "gpt2": _GPT2_NAMES}
_NOT_PARAMETERS = {"rope_freqs.weight"}  # folded into the config instead


def _hf_name(arch: str, gguf_name: str, path: Path) -> str:
    stem, dot, suffix = gguf_name.rpartition(".")
    block = re.fullmatch(r"blk\.(\d+)\.(.+)", stem)
    pattern = f"blk.{{n}}.{block[2]}" if block else stem
    hf_stem = _NAMES[arch].get(pattern)
    if hf_stem is None or suffix not in ("weight", "bias"):
        raise LmlabError(f"{path}: tensor {gguf_name!r} has no counterpart in an HF {arch} model")
    return hf_stem.format(n=block[1] if block else "") + dot + suffix


def _torch_shape(t: gguf.ReaderTensor) -> tuple[int, ...]:
    return tuple(int(d) for d in reversed(t.shape))  # GGUF lists dimensions innermost first


def _dequantize(t: gguf.ReaderTensor, path: Path) -> torch.Tensor:
    try:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as exc:
        raise LmlabError(f"{path}: tensor {t.name} uses {t.tensor_type.name}, "
                         "which the gguf package cannot dequantise") from exc
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(_torch_shape(t)))


def _to_hf_layout(arch: str, name: str, tensor: torch.Tensor, config: dict) -> torch.Tensor:
    if arch == "llama" and ".q_proj." in name:
        return _unpermute_rotary(tensor, config["num_attention_heads"])
    if arch == "llama" and ".k_proj." in name:
        return _unpermute_rotary(tensor, config["num_key_value_heads"])
    if arch == "gpt2" and tensor.dim() == 2 and re.search(r"\.(c_attn|c_proj|c_fc)\.weight$", name):
        return tensor.T.contiguous()  # HF GPT-2 stores these as Conv1D, (in, out)
    return tensor


def _unpermute_rotary(tensor: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order: it interleaves each head's two rotary halves, HF does not."""
    rows = tensor.shape[0]
    per_head = tensor.reshape(n_heads, rows // n_heads // 2, 2, *tensor.shape[1:])
    return per_head.transpose(1, 2).reshape(tensor.shape).contiguous()


# --- tokenizer ---------------------------------------------------------------------------------

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _gpt2_pre():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2_pre():
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2_pre()])


def _split_pre(pattern: str):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


@dataclass(frozen=True)
class _ByteLevelVariant:
    """How the model family's own tokenizer.json splits text before byte-level BPE."""

    pre_tokenizer: Callable[[], pre_tokenizers.PreTokenizer]
    nfc: bool = False  # normalises text to NFC first
    ignore_merges: bool = False  # a word that is itself in the vocabulary is taken whole


_GPT2 = _ByteLevelVariant(_gpt2_pre)
_DIGITS = _ByteLevelVariant(_digits_then_gpt2_pre)
_LLAMA3 = _ByteLevelVariant(lambda: _split_pre(_LLAMA3_SPLIT), ignore_merges=True)
_QWEN2 = _ByteLevelVariant(lambda: _split_pre(_QWEN2_SPLIT), nfc=True)

# keyed by `tokenizer.ggml.pre`, the name llama.cpp gives the vocabulary's family
_BYTE_LEVEL_VARIANTS = {
    "default": _GPT2,
    "gpt-2": _GPT2,
    "phi-2": _GPT2,
    "smollm": _DIGITS,
    "starcoder": _DIGITS,
    "refact": _DIGITS,
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "qwen2": _QWEN2,
}


def _build_tokenizer(fields: dict, path: Path) -> Tokenizer:
    kind = fields.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(fields, path)
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(fields, path)
    else:
        raise LmlabError(f"{path}: GGUF tokenizer model {kind!r} is not supported (supported: gpt2, llama)")
    _add_special_tokens(tokenizer, fields)
    tokenizer.post_processor = _post_processor(fields)
    return tokenizer


def _byte_level_bpe(fields: dict, path: Path) -> Tokenizer:
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre not in _BYTE_LEVEL_VARIANTS:
        raise LmlabError(f"{path}: GGUF pre-tokenizer {pre!r} is not supported "
                         f"(supported: {', '.join(sorted(_BYTE_LEVEL_VARIANTS))})")
    variant = _BYTE_LEVEL_VARIANTS[pre]
    tokens = _require(fields, "tokenizer.ggml.tokens", path)
    merges = [tuple(m.split(" ", 1)) for m in _require(fields, "tokenizer.ggml.merges", path)]
    tokenizer = Tokenizer(models.BPE(_vocab(tokens), merges, ignore_merges=variant.ignore_merges))
    tokenizer.normalizer = normalizers.NFC() if variant.nfc else None
    tokenizer.pre_tokenizer = variant.pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(fields: dict, path: Path) -> Tokenizer:
    """SentencePiece BPE as HF's Llama tokenizer does it: byte fallback, "▁" for spaces."""
    tokens = _require(fields, "tokenizer.ggml.tokens", path)
    scores = _require(fields, "tokenizer.ggml.scores", path)
    types = fields.get("tokenizer.ggml.token_type") or [gguf.TokenType.NORMAL] * len(tokens)
    unk_id = fields.get("tokenizer.ggml.unknown_token_id")
    tokenizer = Tokenizer(models.BPE(
        _vocab(tokens), _sentencepiece_merges(tokens, scores, types),
        unk_token=tokens[unk_id] if unk_id is not None else None, fuse_unk=True, byte_fallback=True))
    prefix_space = fields.get("tokenizer.ggml.add_space_prefix", True)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if prefix_space else "never", split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(steps + [decoders.Strip(" ", 1, 0)] * prefix_space)
    return tokenizer


def _vocab(tokens: list[str]) -> dict[str, int]:
    return {token: i for i, token in enumerate(tokens)}


def _sentencepiece_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """SentencePiece stores no merges: every split of a normal token into two known pieces is one,
    ranked by the merged token's score (as HF's converter ranks them)."""
    vocab = _vocab(tokens)
    ranked = []
    for token, score, kind in zip(tokens, scores, types):
        if kind != gguf.TokenType.NORMAL:
            continue
        pairs = [(token[:i], token[i:]) for i in range(1, len(token))
                 if token[:i] in vocab and token[i:] in vocab]
        pairs.sort(key=lambda p: (vocab[p[0]], vocab[p[1]]))
        ranked += [(score, len(a), len(b), a, b) for a, b in pairs]
    ranked.sort(key=lambda r: r[:3], reverse=True)
    return [(a, b) for *_, a, b in ranked]


def _add_special_tokens(tokenizer: Tokenizer, fields: dict) -> None:
    """Control tokens (e.g. "<|im_start|>") become special added tokens and user-defined ones
    (e.g. "<think>") plain added tokens, so that both are always matched whole."""
    tokens = fields["tokenizer.ggml.tokens"]
    types = fields.get("tokenizer.ggml.token_type") or []
    special = [t for t, kind in zip(tokens, types) if kind in (gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL)]
    user = [t for t, kind in zip(tokens, types) if kind == gguf.TokenType.USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])


def _add_flags(fields: dict) -> tuple[bool, bool]:
    # llama.cpp adds BOS to SentencePiece vocabularies that do not say otherwise
    default_bos = fields.get("tokenizer.ggml.model") == "llama"
    return (fields.get("tokenizer.ggml.add_bos_token", default_bos),
            fields.get("tokenizer.ggml.add_eos_token", False))


def _special_token(fields: dict, key: str) -> tuple[str, int] | None:
    """(text, id) of the token the file names under `tokenizer.ggml.<key>`, if it names a real one."""
    tokens = fields.get("tokenizer.ggml.tokens", [])
    token_id = fields.get(f"tokenizer.ggml.{key}")
    return (tokens[token_id], token_id) if token_id is not None and 0 <= token_id < len(tokens) else None


def _post_processor(fields: dict):
    """Put BOS/EOS around every encoding when the file says llama.cpp adds them."""
    add_bos, add_eos = _add_flags(fields)
    bos = _special_token(fields, "bos_token_id") if add_bos else None
    eos = _special_token(fields, "eos_token_id") if add_eos else None
    if bos is None and eos is None:
        return None

    def around(sequence: str, type_id: int) -> list[str]:
        return ([f"{bos[0]}:{type_id}"] if bos else []) + [f"{sequence}:{type_id}"] + (
            [f"{eos[0]}:{type_id}"] if eos else [])

    return processors.TemplateProcessing(
        single=around("$A", 0), pair=around("$A", 0) + around("$B", 1),
        special_tokens=list(dict.fromkeys(t for t in (bos, eos) if t)))


def _tokenizer_config(fields: dict, config: dict) -> dict:
    add_bos, add_eos = _add_flags(fields)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.get("max_position_embeddings", config.get("n_positions")),
    }
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        if (token := _special_token(fields, key)) is not None:
            tokenizer_config[name] = token[0]
    if "tokenizer.chat_template" in fields:
        tokenizer_config["chat_template"] = fields["tokenizer.chat_template"]
    return tokenizer_config


def _generation_config(config: dict) -> dict:
    keys = ("bos_token_id", "eos_token_id", "pad_token_id")
    return {k: config[k] for k in keys if k in config}
