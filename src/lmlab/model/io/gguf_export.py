"""Write an HF model folder as a llama.cpp GGUF file (the inverse of lmlab.model.io.gguf).

Llama-family models (llama.cpp's "llama" architecture: Llama, SmolLM2, Mistral) with a
byte-level BPE tokenizer, as llama.cpp's own convert_hf_to_gguf.py writes them: the config as
`llama.*` metadata, weights under llama.cpp's names in F32 (or F16) with q/k rows permuted into
llama.cpp's rotary order, and the tokenizer as tokens, types and merges. Its pre-tokenizer name
(`tokenizer.ggml.pre`) is the one whose split matches the folder's tokenizer on probe text, so
a file is only written when llama.cpp will split text the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lmlab.errors import LmlabError

_PROBE = ("Hello world! It's 2024: 12345 apples, 3.14 pies; don't   stop\n\ttabs\r\nüñí 日本語 "
          "x=y+1 #tag @user <tag> '''quotes''' ... 42nd")


def _gguf_names() -> dict[str, str]:
    from lmlab.model.io.gguf import _DECODER_NAMES

    return {hf: g for g, hf in _DECODER_NAMES.items()}


def _gguf_name(hf_name: str) -> str:
    import re

    stem, _, suffix = hf_name.rpartition(".")
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", stem)
    key = f"model.layers.{{n}}.{m[2]}" if m else stem
    g = _gguf_names().get(key)
    if g is None:
        raise LmlabError(f"tensor {hf_name!r} has no llama.cpp name")
    return g.format(n=m[1] if m else "") + "." + suffix


def _permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF's rotary row order -> llama.cpp's (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _pre_name(tokenizer) -> str:
    """The llama.cpp pre-tokenizer whose split of the probe text equals this tokenizer's."""
    from lmlab.model.io.gguf import _BYTE_LEVEL_VARIANTS

    want = [t for t, _ in tokenizer.pre_tokenizer.pre_tokenize_str(_PROBE)] if tokenizer.pre_tokenizer else None
    for name in ("gpt-2", "smollm", "llama-bpe", "qwen2"):
        got = [t for t, _ in _BYTE_LEVEL_VARIANTS[name].pre_tokenizer().pre_tokenize_str(_PROBE)]
        if got == want:
            return name
    raise LmlabError("the tokenizer's pre-tokenizer matches none llama.cpp names (gpt-2, smollm, llama-bpe, qwen2)")


def export_gguf(folder: str | Path, out: str | Path, dtype: str = "f32") -> Path:
    """folder (an HF llama-family model folder with tokenizer.json) -> out (.gguf)."""
    import gguf
    from tokenizers import Tokenizer

    from lmlab.model.io.hf import load_model, ours_to_hf

    folder, out = Path(folder), Path(out)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") not in ("llama", "mistral"):
        raise LmlabError(f"{folder}: GGUF export supports llama-family models, not {config.get('model_type')!r}")
    tok_json = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if tok_json.get("model", {}).get("type") != "BPE" or tok_json["model"].get("byte_fallback"):
        raise LmlabError(f"{folder}: GGUF export supports byte-level BPE tokenizers only")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pre = _pre_name(tokenizer)
    model = load_model(folder)
    c = model.config
    state = ours_to_hf({k: v.detach() for k, v in model.state_dict().items()}, c)
    if c.tie_embeddings:
        state.pop("lm_head.weight", None)

    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(folder.name)
    w.add_context_length(c.max_seq_len)
    w.add_embedding_length(c.dim)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.ffn_dim)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)

    # tokenizer: every id in order (added tokens included), their types, merges, special ids
    vocab = dict(tok_json["model"]["vocab"])
    added = {t["content"]: t for t in tok_json.get("added_tokens", [])}
    for t in added.values():
        vocab[t["content"]] = t["id"]
    by_id = {i: t for t, i in vocab.items()}
    n = max(c.vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n)]
    types = [(gguf.TokenType.CONTROL if added[t].get("special") else gguf.TokenType.USER_DEFINED)
             if t in added else (gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED)
             for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"].get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    tcfg_path = folder / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text(encoding="utf-8")) if tcfg_path.is_file() else {}
    for key, add in (("bos_token", w.add_bos_token_id), ("eos_token", w.add_eos_token_id),
                     ("pad_token", w.add_pad_token_id), ("unk_token", w.add_unk_token_id)):
        text = tcfg.get(key)
        text = text.get("content") if isinstance(text, dict) else text
        if text in vocab:
            add(vocab[text])
    w.add_add_bos_token(bool(tcfg.get("add_bos_token", False)))
    template = tcfg.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        w.add_chat_template(template)

    for name, t in state.items():
        t = t.float()
        if name.endswith("q_proj.weight"):
            t = _permute(t, c.n_heads)
        elif name.endswith("k_proj.weight"):
            t = _permute(t, c.n_kv_heads)
        arr = t.numpy()
        # llama.cpp keeps norms (1-D) in F32 whatever the file type
        arr = arr.astype(np.float16) if dtype == "f16" and arr.ndim > 1 else arr.astype(np.float32)
        w.add_tensor(_gguf_name(name), arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
