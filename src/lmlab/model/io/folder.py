"""Write an HF-format model folder atomically: config, safetensors weights, tokenizer files.

Readers of this folder are our own loader (`lmlab.model.io.hf`) and
`transformers.AutoModelForCausalLM.from_pretrained`; both see either the old folder or the
complete new one, never a half-written one, because we build it beside the target and rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

SHARD_BYTES = 2 * 1024**3  # split weights above 2 GiB per file, as transformers does by default


def save_hf_folder(
    out_dir: str | os.PathLike,
    config: dict,
    tensors: dict[str, torch.Tensor],
    tokenizer_files: dict[str, str | dict] | None = None,
    generation_config: dict | None = None,
) -> Path:
    """Write `config.json`, `model*.safetensors` (+ index when sharded) and tokenizer files.

    `tensors` use HF parameter names. `tokenizer_files` maps a file name (e.g. "tokenizer.json",
    "tokenizer_config.json", "chat_template.jinja") to its text or a JSON-able dict.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is an ordinary folder
    try:
        _write_json(tmp / "config.json", config)
        if generation_config:
            _write_json(tmp / "generation_config.json", generation_config)
        _write_weights(tmp, tensors)
        for name, content in (tokenizer_files or {}).items():
            if isinstance(content, dict):
                _write_json(tmp / name, content)
            else:
                (tmp / name).write_text(content, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    # safetensors refuses shared or non-contiguous storage; tied weights are written once by callers.
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata=meta)
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(folder / "model.safetensors.index.json",
                {"metadata": {"total_size": total}, "weight_map": weight_map})
