"""serve (`--serve`): `lmlab serve` on the final model, in this process, until stopped."""

from __future__ import annotations

from pathlib import Path


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    return []


def command(cfg, model: str) -> list[str]:
    return ["lmlab", "serve", "--model", model, "--host", cfg.host, "--port", str(cfg.port), "--engine", cfg.engine]


def run(cfg, ctx, folder: Path) -> dict:
    from lmlab.serve.app import serve
    from lmlab.serve.config import ServeConfig

    model = ctx.current_model()
    print("serving:", " ".join(command(cfg, model)))
    serve(ServeConfig(model=model, host=cfg.host, port=cfg.port, engine=cfg.engine))
    return {"model": model}
