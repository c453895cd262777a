"""Parameter-efficient fine-tuning: LoRA, bottleneck adapters, prefix and prompt tuning.

Every method saves what it trained as an adapter folder (adapter_config.json + safetensors; peft's
format for LoRA, prefix and prompt tuning) naming its base model, and `load_trained` rebuilds the
model from it; `lmlab.load(folder)` and every `--model` option accept such a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmlab.errors import LmlabError


def adapter_config(folder) -> dict | None:
    """The adapter_config.json of a trained-adapter folder, or None for anything else."""
    path = Path(str(folder)) / "adapter_config.json" if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LmlabError(f"{path}: invalid JSON ({e})") from None


def save_trained(model, out_dir, base_model: str) -> Path:
    """Save whichever method the model carries (LoRA, adapters, prefix or soft prompt)."""
    from lmlab.model.peft import adapter, lora, prefix, prompt

    if isinstance(model.embed, prompt.PromptEmbedding):
        return prompt.save_prompt(model, out_dir, base_model)
    if isinstance(model.prefix, prefix.Prefix):
        return prefix.save_prefix(model, out_dir, base_model)
    if adapter.adapter_state(model):
        return adapter.save_adapters(model, out_dir, base_model)
    if lora.lora_modules(model):
        return lora.save_adapter(model, out_dir, base_model=base_model)
    raise LmlabError("the model carries no adapter, prefix or soft prompt to save")


def apply_trained(model, folder):
    """Apply a saved adapter folder to its base model (in place)."""
    from lmlab.model.peft import adapter, lora, prefix, prompt

    config = adapter_config(folder)
    kind = (config or {}).get("peft_type")
    loaders = {"LORA": lambda: lora.load_adapter(model, folder),
               "BOTTLENECK": lambda: adapter.load_adapters(model, folder, config),
               "PREFIX_TUNING": lambda: prefix.load_prefix(model, folder, config),
               "PROMPT_TUNING": lambda: prompt.load_prompt(model, folder, config)}
    if kind not in loaders:
        raise LmlabError(f"{folder}: unsupported adapter type {kind!r}; supported: {', '.join(loaders)}")
    return loaders[kind]()


def base_of(folder) -> str | None:
    """The base model an adapter folder was trained on (None if `folder` is not one)."""
    config = adapter_config(folder)
    if config is None:
        return None
    base = config.get("base_model_name_or_path")
    if not base:
        raise LmlabError(f"{folder}: adapter_config.json names no base_model_name_or_path")
    return base
