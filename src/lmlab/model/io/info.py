"""`lmlab models info | convert`: what a model is, and turning any source into an HF folder."""

from __future__ import annotations

from pathlib import Path

from lmlab.model.io.resolve import resolve


def model_info(spec: str | None = None) -> dict:
    import torch

    from lmlab.model.io.hf import read_config
    from lmlab.model.transformer import Transformer
    from lmlab.tokenizer import Tokenizer

    folder = resolve(spec)
    c = read_config(folder)
    tok = Tokenizer.from_folder(folder)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    with torch.device("meta"):  # shapes only, no memory
        params = sum(p.numel() for p in Transformer(c).parameters())  # tied weights count once
    return {
        "folder": str(folder), "family": c.family, "model_type": c.model_type,
        "parameters": f"{params / 1e6:.1f}M", "layers": c.n_layers, "dim": c.dim,
        "heads": c.n_heads, "kv_heads": c.n_kv_heads, "head_dim": c.head_dim, "ffn_dim": c.ffn_dim,
        "vocab": c.vocab_size, "context": c.max_seq_len, "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling, "tied_embeddings": c.tie_embeddings,
        "chat_template": bool(tok.chat_template), "eos": tok.special_tokens.get("eos_token"),
        "weights_mb": round(weights / 2**20, 1),
    }


def convert(spec: str | None, out: str | None = None, dtype: str = "float32") -> Path:
    """Resolve (a GGUF converts into the cache); with `out`, also write an HF folder there."""
    folder = resolve(spec)
    if out is None:
        return folder
    import torch

    from lmlab.model.io.hf import load_model, save_model

    return save_model(load_model(folder, getattr(torch, dtype)), out, tokenizer_folder=folder)
