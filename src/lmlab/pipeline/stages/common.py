"""What the training stages share: a TrainConfig from a stage's keys, and each one's curve."""

from __future__ import annotations

import json
from pathlib import Path

from lmlab.train.config import TrainConfig


def train_config(ctx, stage_cfg, folder: Path, **values) -> TrainConfig:
    """The stage's TrainConfig: the previous model, the recipe's seed and device, resume on (a
    stage folder only ever holds checkpoints of its own key), then the stage's `train` overrides."""
    from lmlab.config import load_config

    r = ctx.recipe
    base = {"model": ctx.current_model(), "output": str(folder / "train"), "seed": r.seed, "device": r.device,
            "resume": True, "save_every": stage_cfg.save_every, "progress": True}
    return load_config(TrainConfig, None, list(stage_cfg.train), **{**base, **values})


def curve(folder: Path) -> list[dict]:
    """metrics.jsonl of a finished trainer run (one row per logged step)."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def resumed_from(folder: Path) -> int | None:
    """The step the trainer will resume from, if a checkpoint is there."""
    from lmlab.train import checkpoint

    path = checkpoint.latest(Path(folder) / "checkpoints")
    return int(path.name.split("-")[1]) if path else None


def plain(result: dict) -> dict:
    """A trainer result with only JSON-friendly values."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool, list)) or v is None}
