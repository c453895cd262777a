"""HF-format folders: config.json + (sharded) safetensors <-> our Transformer.

Our parameter names are short (`layers.3.attn.q_proj.weight`); this module is the one place that
knows the HF names. GPT-2 checkpoints store Conv1D weights transposed and q/k/v fused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lmlab.errors import LmlabError
from lmlab.model.config import ModelConfig
from lmlab.model.io.folder import save_hf_folder
from lmlab.model.transformer import Transformer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")

# (HF prefix, our prefix); "{i}" stands for a layer number. Read left to right, written right to left.
LLAMA_NAMES = [
    ("model.embed_tokens.", "embed."),
    ("model.norm.", "norm."),
    ("model.layers.{i}.input_layernorm.", "layers.{i}.attn_norm."),
    ("model.layers.{i}.post_attention_layernorm.", "layers.{i}.mlp_norm."),
    ("model.layers.{i}.self_attn.", "layers.{i}.attn."),
    ("model.layers.{i}.mlp.", "layers.{i}.mlp."),
    ("lm_head.", "lm_head."),
]
GPT2_NAMES = [  # without the optional "transformer." prefix; c_attn is split separately
    ("wte.", "embed."),
    ("wpe.", "pos_embed."),
    ("ln_f.", "norm."),
    ("h.{i}.ln_1.", "layers.{i}.attn_norm."),
    ("h.{i}.ln_2.", "layers.{i}.mlp_norm."),
    ("h.{i}.attn.c_proj.", "layers.{i}.attn.o_proj."),
    ("h.{i}.mlp.c_fc.", "layers.{i}.mlp.up_proj."),
    ("h.{i}.mlp.c_proj.", "layers.{i}.mlp.down_proj."),
    ("lm_head.", "lm_head."),
]


def _rename(name: str, table, to_hf: bool = False) -> str | None:
    for hf, ours in table:
        src, dst = (ours, hf) if to_hf else (hf, ours)
        m = re.match(re.escape(src).replace(r"\{i\}", r"(\d+)"), name)
        if m:
            return dst.replace("{i}", m.group(1) if m.groups() else "") + name[m.end():]
    return None


# ---- reading --------------------------------------------------------------------------------

def read_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise LmlabError(f"{folder}: not a model folder (no config.json)")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmlabError(f"{path}: invalid JSON ({e})") from None
    return ModelConfig.from_hf(hf)


def read_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's safetensors files (sharded or not), with their HF names."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LmlabError(f"{folder}: no *.safetensors weights (only safetensors checkpoints are read)")
    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise LmlabError(f"{f}: corrupt safetensors file ({e})") from None
    return tensors


def hf_to_ours(hf: dict[str, torch.Tensor], c: ModelConfig) -> dict[str, torch.Tensor]:
    out = {}
    if c.family == "llama":
        for name, t in hf.items():
            new = _rename(name, LLAMA_NAMES)
            if new is not None:
                out[new] = t
        return out
    for name, t in hf.items():
        name = name.removeprefix("transformer.")
        if m := re.match(r"^h\.(\d+)\.attn\.c_attn\.(weight|bias)$", name):
            # Conv1D stores [in, out]; q, k, v are consecutive blocks of `out`.
            q, k, v = (t.t() if m[2] == "weight" else t).chunk(3, dim=0)
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
                out[f"layers.{m[1]}.attn.{proj}.{m[2]}"] = part.contiguous()
            continue
        new = _rename(name, GPT2_NAMES)
        if new is None:
            continue  # attn.bias / masked_bias buffers of old checkpoints
        if new.endswith("proj.weight") and not new.startswith("lm_head"):
            t = t.t().contiguous()
        out[new] = t
    return out


def ours_to_hf(state: dict[str, torch.Tensor], c: ModelConfig) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in state.items() if not (c.tie_embeddings and k == "lm_head.weight")}
    out = {}
    if c.family == "llama":
        for name, t in state.items():
            out[_rename(name, LLAMA_NAMES, to_hf=True)] = t
        return out
    for name, t in state.items():
        if m := re.match(r"^layers\.(\d+)\.attn\.q_proj\.(weight|bias)$", name):
            i, kind = m[1], m[2]
            parts = [state[f"layers.{i}.attn.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")]
            fused = torch.cat(parts, dim=0)
            out[f"transformer.h.{i}.attn.c_attn.{kind}"] = fused.t() if kind == "weight" else fused
            continue
        if re.match(r"^layers\.\d+\.attn\.[kv]_proj\.", name):
            continue
        new = _rename(name, GPT2_NAMES, to_hf=True)
        if name.endswith("proj.weight"):
            t = t.t()
        out[new if new.startswith("lm_head") else "transformer." + new] = t
    return out


def load_model(folder: str | Path, dtype: torch.dtype = torch.float32) -> Transformer:
    """Build our Transformer from an HF folder; weights are assigned, never randomly initialised."""
    config = read_config(folder)
    state = hf_to_ours(read_tensors(folder), config)
    with torch.device("meta"):
        model = Transformer(config)
    expected = set(model.state_dict())
    if config.tie_embeddings:
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(state))
    if missing:
        raise LmlabError(f"{folder}: weights missing from the checkpoint: {', '.join(missing[:5])}"
                         + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    state = {k: v.to(dtype) for k, v in state.items() if k in expected}
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval()


# ---- writing --------------------------------------------------------------------------------

def save_model(model: Transformer, out_dir: str | Path, tokenizer_folder: str | Path | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Write an HF folder that transformers loads with the same logits; copies tokenizer files."""
    c = model.config
    state = {k: (v.to(dtype) if dtype else v) for k, v in model.state_dict().items()}
    hf_config = c.to_hf()
    hf_config["torch_dtype"] = str(dtype or next(model.parameters()).dtype).removeprefix("torch.")
    files = {}
    if tokenizer_folder is not None:
        for name in TOKENIZER_FILES:
            p = Path(tokenizer_folder) / name
            if p.is_file():
                files[name] = p.read_text(encoding="utf-8")
    return save_hf_folder(out_dir, hf_config, ours_to_hf(state, c), files)
