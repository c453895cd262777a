"""Checkpoints that survive a kill: written to a temporary folder, then renamed in one step.

A folder `step-000120/` holds what training changes (trainable weights, optimizer state), the
trainer's position (step, epoch, batch) and every rank's RNG states. A half-written checkpoint
is only ever a `.tmp-*` folder, which loading ignores and the next save removes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from lmlab.errors import LmlabError


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / "trainer.json").is_file())
    return done[-1] if done else None


def save(root: Path, step: int, model_state: dict, optim_state: dict, trainer: dict, d, keep_last: int) -> Path:
    """Every rank calls this (each saves its RNG); rank 0 writes the rest and publishes."""
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if d.main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    d.barrier()
    torch.save(rng_state(), tmp / f"rng-{d.rank}.pt")
    d.barrier()
    if d.main:
        torch.save(model_state, tmp / "model.pt")
        torch.save(optim_state, tmp / "optimizer.pt")
        # trainer.json is written last: a folder without it is not a checkpoint.
        (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1), encoding="utf-8")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in sorted(p for p in root.glob("step-*") if p != final)[:-keep_last or None]:
            shutil.rmtree(old, ignore_errors=True)
    d.barrier()
    return final


def load(path: Path, d) -> tuple[dict, dict, dict]:
    """(model_state, optimizer_state, trainer_state); restores this rank's RNG states."""
    try:
        trainer = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=False)
        optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        rng = path / f"rng-{d.rank}.pt"
        if rng.is_file():
            set_rng_state(torch.load(rng, weights_only=False))
    except (OSError, RuntimeError, ValueError) as e:
        raise LmlabError(f"{path}: unreadable checkpoint ({e})") from None
    if trainer.get("world", 1) != d.world:
        raise LmlabError(f"{path}: written by {trainer.get('world')} processes, resumed with {d.world}; "
                         "resume with the same number of processes")
    return model_state, optim_state, trainer


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
