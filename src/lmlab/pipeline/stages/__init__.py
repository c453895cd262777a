"""One module per stage: `inputs(cfg, recipe)` (files it reads: checked before any work and part
of its key) and `run(cfg, ctx, folder) -> result`; each calls the public API of its area."""
