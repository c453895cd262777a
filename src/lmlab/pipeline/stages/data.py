"""data: curate the SFT and preference data with lmlab.data (`lmlab data curate`), decontaminated
against the evaluation sets the eval stage uses. Without that area the stage is reported as not
available and the training stages read their raw data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lmlab.pipeline.runner import Unavailable


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    out = [] if cfg.sft == "flan" else [("sft data", cfg.sft)]
    return out + [("preference pairs", cfg.preference)]


def environment() -> dict:
    return {"lmlab.data": _installed()}


def _installed() -> bool:
    try:
        return importlib.util.find_spec("lmlab.data") is not None
    except ModuleNotFoundError:
        return False


def run(cfg, ctx, folder: Path) -> dict:
    if not _installed():
        raise Unavailable("lmlab.data (corpus curation, decontamination) is not installed in this build")
    raise Unavailable("lmlab.data has no curation entry point this pipeline knows")
