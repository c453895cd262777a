"""Checkpoints that survive a kill: written to a temporary folder, then renamed in one step.

A folder `step-000120/` holds what training changes (trainable weights, optimizer state), the
trainer's position (step, epoch, batch) and every rank's RNG states. A half-written checkpoint
is only ever a `.tmp-*` folder, which loading ignores and the next save removes; pruning renames
a folder to `.tmp-*` before deleting it, and a `step-*` folder missing any of its files is
skipped, so resume falls back to the newest complete one.

What lmlab trusts in a run folder: nothing that can run code. Tensors are stored with
safetensors (`model.safetensors`, `optimizer.safetensors`) and everything else as JSON
(`trainer.json`, `optimizer.json`, `rng-RANK.json`), so `--resume` on a run folder from
elsewhere reads data and never unpickles. Older checkpoints (`model.pt`, `optimizer.pt`,
`rng-RANK.pt`) are read with `torch.load(weights_only=True)`, which refuses any object outside
tensors, containers and numpy's RNG array types.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lmlab.errors import LmlabError

FILES = ("model.safetensors", "optimizer.safetensors", "optimizer.json", "trainer.json")
LEGACY_FILES = ("model.pt", "optimizer.pt", "trainer.json")


def rng_state() -> dict:
    """This process's RNG states as JSON-able values."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def complete(path: Path) -> bool:
    """Every file of a checkpoint is there (trainer.json is written last, but a kill while a
    folder was deleted, or a hand copied run folder, can leave it without its weights)."""
    return all((path / f).is_file() for f in FILES) or all((path / f).is_file() for f in LEGACY_FILES)


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`."""
    done = sorted(p for p in root.glob("step-*") if complete(p))
    return done[-1] if done else None


def save(root: Path, step: int, model_state: dict, optim_state: dict, trainer: dict, d, keep_last: int) -> Path:
    """Every rank calls this (each saves its RNG); rank 0 writes the rest and publishes, keeping
    the newest `keep_last` checkpoints."""
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if d.main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    d.barrier()
    (tmp / f"rng-{d.rank}.json").write_text(json.dumps(rng_state()), encoding="utf-8")
    d.barrier()
    if d.main:
        save_file(_plain(model_state), tmp / "model.safetensors")
        tensors, rest = _split_optimizer(optim_state)
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(rest), encoding="utf-8")
        # trainer.json is written last: a folder without it is not a checkpoint.
        (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1), encoding="utf-8")
        _fsync_dir(tmp)
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        older = sorted(p for p in root.glob("step-*") if p != final)
        for old in older[:max(0, len(older) - (keep_last - 1))]:
            _remove(old)
    d.barrier()
    return final


def load(path: Path, d) -> tuple[dict, dict, dict]:
    """(model_state, optimizer_state, trainer_state); restores this rank's RNG states."""
    try:
        trainer = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        if (path / "model.safetensors").is_file():
            model_state = load_file(path / "model.safetensors")
            optim_state = _join_optimizer(load_file(path / "optimizer.safetensors"),
                                          json.loads((path / "optimizer.json").read_text(encoding="utf-8")))
        else:
            model_state = _legacy(path / "model.pt")
            optim_state = _legacy(path / "optimizer.pt")
        rng = path / f"rng-{d.rank}.json"
        if rng.is_file():
            set_rng_state(json.loads(rng.read_text(encoding="utf-8")))
        elif (path / f"rng-{d.rank}.pt").is_file():
            set_rng_state(_legacy_rng(_legacy(path / f"rng-{d.rank}.pt")))
    except Exception as e:  # noqa: BLE001 - any damage or refusal is the file's, reported as such
        raise LmlabError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:300]})") from None
    if trainer.get("world", 1) != d.world:
        raise LmlabError(f"{path}: written by {trainer.get('world')} processes, resumed with {d.world}; "
                         "resume with the same number of processes")
    return model_state, optim_state, trainer


def weights(path: Path) -> dict:
    """The trainable weights a checkpoint folder holds."""
    return load_file(path / "model.safetensors") if (path / "model.safetensors").is_file() \
        else _legacy(path / "model.pt")


# ---- storage ------------------------------------------------------------------------------------

def _plain(state: dict) -> dict:
    """Tensors as safetensors stores them: on the CPU, contiguous, no two sharing memory."""
    out, seen = {}, set()
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if v.untyped_storage().data_ptr() in seen and v.numel():
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def _split_optimizer(state: dict) -> tuple[dict, dict]:
    """An optimizer state dict -> (tensors "PARAM/KEY", the rest as JSON: param groups, scalars)."""
    tensors, scalars = {}, {}
    for name, values in state["state"].items():
        for key, v in values.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}/{key}"] = v
            else:
                scalars.setdefault(str(name), {})[key] = v
    return _plain(tensors), {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict, rest: dict) -> dict:
    state: dict = {}
    for full, v in tensors.items():
        name, key = full.rsplit("/", 1)
        state.setdefault(name, {})[key] = v
    for name, values in rest["scalars"].items():
        state.setdefault(name, {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def _legacy(path: Path):
    """A checkpoint file of older lmlab versions, read without running code: torch's restricted
    unpickler takes tensors and containers, plus numpy's RNG state arrays."""
    try:
        reconstruct = np._core.multiarray._reconstruct
    except AttributeError:
        reconstruct = np.core.multiarray._reconstruct
    with torch.serialization.safe_globals([reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _legacy_rng(state: dict) -> dict:
    version, mt, gauss = state["python"]
    out = {"python": [version, list(mt), gauss], "numpy": [state["numpy"][0], state["numpy"][1].tolist(),
                                                         *state["numpy"][2:]], "torch": state["torch"].tolist()}
    if "cuda" in state:
        out["cuda"] = [s.tolist() for s in state["cuda"]]
    return out


def _remove(path: Path) -> None:
    """Delete a checkpoint folder so that a kill midway leaves nothing `latest` would pick."""
    doomed = path.with_name(f".tmp-old-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
