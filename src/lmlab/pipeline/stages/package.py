"""package: the final model quantised (int8, int4: lmlab.model.quant) with the perplexity cost of
each measured against fp32, exported as an HF folder and as a GGUF file."""

from __future__ import annotations

import shutil
from pathlib import Path

from lmlab.errors import LmlabError


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    return [("perplexity text", cfg.perplexity)] if cfg.perplexity else []


def run(cfg, ctx, folder: Path) -> dict:
    from lmlab.lm import load
    from lmlab.model.io.resolve import resolve
    from lmlab.pipeline.metrics import perplexity

    final = ctx.current_model()
    source = resolve(final)
    out = {"model": str(source), "quantised": {}}
    if cfg.perplexity:
        ref = perplexity(load(final, "fp32"), cfg.perplexity, cfg.perplexity_limit, folder / "ppl-fp32")
        out["quantised"]["fp32"] = {"perplexity": ref, "cost": 0.0}
        for fmt in cfg.quantise:
            try:
                lm = load(final, weights=fmt)
            except LmlabError as e:  # a format this machine cannot run
                out["quantised"][fmt] = {"available": False, "reason": str(e)}
                continue
            p = perplexity(lm, cfg.perplexity, cfg.perplexity_limit, folder / f"ppl-{fmt}")
            out["quantised"][fmt] = {"perplexity": p, "cost": p["value"] / ref["value"] - 1}
    if cfg.hf:
        target = folder / "hf"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock", ".cache"))
        out["hf"] = str(target)
    if cfg.gguf:
        out["gguf"] = _gguf(source, folder)
    return out


def _gguf(source: Path, folder: Path) -> dict:
    try:
        from lmlab.model.io.gguf_export import export_gguf
    except ImportError:
        return {"available": False, "reason": "no GGUF writer in lmlab.model.io"}
    try:
        path = export_gguf(source, folder / "model.gguf")
    except LmlabError as e:
        return {"available": False, "reason": str(e)}
    return {"available": True, "path": str(path), "bytes": path.stat().st_size}
