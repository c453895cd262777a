"""HF-format folders: config.json + (sharded) safetensors <-> our Transformer.

Our parameter names are short (`layers.3.attn.qkv_proj.weight`); this module is the one place that
knows the HF names. We keep q/k/v and gate/up fused (one matmul each); HF Llama checkpoints keep
them apart, GPT-2 checkpoints fuse q/k/v but store Conv1D weights transposed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lmlab.errors import LmlabError
from lmlab.model.config import ModelConfig
from lmlab.model.io.folder import save_hf_folder
from lmlab.model.quant import convert_module, convert_weights
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
GPT2_NAMES = [  # without the optional "transformer." prefix
    ("wte.", "embed."),
    ("wpe.", "pos_embed."),
    ("ln_f.", "norm."),
    ("h.{i}.ln_1.", "layers.{i}.attn_norm."),
    ("h.{i}.ln_2.", "layers.{i}.mlp_norm."),
    ("h.{i}.attn.c_attn.", "layers.{i}.attn.qkv_proj."),
    ("h.{i}.attn.c_proj.", "layers.{i}.attn.o_proj."),
    ("h.{i}.mlp.c_fc.", "layers.{i}.mlp.up_proj."),
    ("h.{i}.mlp.c_proj.", "layers.{i}.mlp.down_proj."),
    ("lm_head.", "lm_head."),
]


# Our fused parameters and the HF parts they concatenate (along the output dimension).
FUSED = {"attn.qkv_proj": ("attn.q_proj", "attn.k_proj", "attn.v_proj"),
         "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj")}


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


def _tensor_files(folder: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file (of a sharded or single-file checkpoint) holding it."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LmlabError(f"{folder}: no *.safetensors weights (only safetensors checkpoints are read)")
    where = {}
    for f in files:
        try:
            with safe_open(str(f), "pt") as h:
                where.update(dict.fromkeys(h.keys(), f))
        except (SafetensorError, OSError, ValueError) as e:
            raise LmlabError(f"{f}: corrupt safetensors file ({e})") from None
    return where


def _read(where: dict[str, Path], names: list[str]) -> dict[str, torch.Tensor]:
    """Some tensors, each file open only while they are read: an open file is memory-mapped, and
    the mapped pages it has touched count toward the process's resident memory."""
    from safetensors import safe_open

    out = {}
    for f in sorted({where[n] for n in names}):
        with safe_open(str(f), "pt") as h:
            out.update({n: h.get_tensor(n) for n in names if where[n] == f})
    return out


def hf_to_ours(hf: dict[str, torch.Tensor], c: ModelConfig) -> dict[str, torch.Tensor]:
    out = {}
    table = LLAMA_NAMES if c.family == "llama" else GPT2_NAMES
    for name, t in hf.items():
        new = _rename(name.removeprefix("transformer."), table)
        if new is None:
            continue  # rotary inv_freq, GPT-2's attn.bias / masked_bias buffers
        if c.family == "gpt2" and new.endswith("proj.weight") and not new.startswith("lm_head"):
            t = t.t().contiguous()  # Conv1D stores [in, out]
        out[new] = t
    for fused, parts in FUSED.items():
        for name in [n for n in out if f".{parts[0]}." in n]:
            names = [name.replace(parts[0], p) for p in parts]
            if all(n in out for n in names):
                out[name.replace(parts[0], fused)] = torch.cat([out.pop(n) for n in names])
    return out


def ours_to_hf(state: dict[str, torch.Tensor], c: ModelConfig) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in state.items() if not (c.tie_embeddings and k == "lm_head.weight")}
    if c.family == "gpt2":
        return {("" if n.startswith("lm_head") else "transformer.") + _rename(n, GPT2_NAMES, to_hf=True):
                t.t() if n.endswith("proj.weight") else t for n, t in state.items()}
    sizes = {"attn.qkv_proj": [c.n_heads * c.head_dim] + [c.n_kv_heads * c.head_dim] * 2,
             "mlp.gate_up_proj": [c.ffn_dim, c.ffn_dim]}
    split = {}
    for name, t in state.items():
        fused = next((f for f in FUSED if f".{f}." in name), None)
        if fused is None:
            split[name] = t
            continue
        for part, piece in zip(FUSED[fused], t.split(sizes[fused])):
            split[name.replace(fused, part)] = piece
    return {_rename(n, LLAMA_NAMES, to_hf=True): t for n, t in split.items()}


def load_model(folder: str | Path, dtype: torch.dtype = torch.float32, weights: str | None = None) -> Transformer:
    """Build our Transformer from an HF folder; weights are assigned, never randomly initialised.

    weights: an inference format (fp32 | bf16 | int8 | w8a8 | int4, see `lmlab.model.quant`), applied
    block by block as the checkpoint is read: peak memory is the converted model plus one block
    as loaded, never the whole model in `dtype`.
    """
    config = read_config(folder)
    where = _tensor_files(Path(folder))
    with torch.device("meta"):
        model = Transformer(config)
    expected = set(model.state_dict())
    if config.tie_embeddings:
        expected.discard("lm_head.weight")
    table = LLAMA_NAMES if config.family == "llama" else GPT2_NAMES
    blocks: dict[int | None, list[str]] = {}  # layer -> its HF names; None: embeddings, final norm, head
    for name in where:
        ours = _rename(name.removeprefix("transformer."), table) or ""
        m = re.match(r"layers\.(\d+)\.", ours)
        blocks.setdefault(int(m.group(1)) if m else None, []).append(name)
    loaded: set[str] = set()
    for layer in sorted(blocks, key=lambda i: (i is None, i or 0)):  # the layers in order, then the rest
        state = hf_to_ours(_read(where, blocks[layer]), config)
        state = {k: v.to(dtype) for k, v in state.items() if k in expected}
        model.load_state_dict(state, strict=False, assign=True)
        loaded |= state.keys()
        if layer is not None and weights and layer < config.n_layers:
            _check_loaded(folder, {k for k in expected if k.startswith(f"layers.{layer}.")}, loaded)
            convert_module(model.layers[layer], weights)
    _check_loaded(folder, expected, loaded)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    if weights:
        convert_weights(model, weights)
    return model.eval()


def _check_loaded(folder, expected: set[str], loaded: set[str]) -> None:
    missing = sorted(expected - loaded)
    if missing:
        raise LmlabError(f"{folder}: weights missing from the checkpoint: {', '.join(missing[:5])}"
                         + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))


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
