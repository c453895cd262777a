"""Run a recipe's stages in order, each cached under a key, each resumable.

DIR/stages/NAME/state.json holds a stage's key, status and result. The key is a hash of the
stage's config, the recipe's globals (model, seed), the files it reads and the keys of the
stages whose outputs it uses (and the stage module's source), so a changed setting re-runs that
stage and exactly the stages that depend on it. A stage whose state says `running` under the current key was interrupted:
it runs again in the same folder and its trainer resumes from the last checkpoint; under another
key the folder is cleared first. A stage whose area (lmlab.data, lmlab.judge, ...) is not
installed reports "not available" with the reason, and is tried again on the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.pipeline.recipe import STAGES, TRAINING, Recipe, as_dict

# Whose outputs each stage uses: its key includes theirs.
NEEDS = {
    "data": (),
    "adapt": (),
    "sft": ("data", "adapt"),
    "preference": ("data", "adapt", "sft"),
    "eval": ("data", "adapt", "sft", "preference"),
    "package": ("adapt", "sft", "preference"),
    "serve": ("adapt", "sft", "preference", "package"),
}
UNCACHED = ("serve",)  # runs every time it is asked for


class Unavailable(Exception):
    """Raised by a stage whose area is not installed: the stage is reported, not faked."""


@dataclass
class Context:
    recipe: Recipe
    out: Path
    results: dict = field(default_factory=dict)  # stage -> its result (finished stages)
    keys: dict = field(default_factory=dict)  # stage -> key (every stage reached, done or not)
    dist: object = None  # lmlab.train.distributed.Dist: world 1 unless started by torchrun

    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name

    @property
    def base_model(self) -> str:
        return self.recipe.model or "smollm2"

    def models(self) -> list[tuple[str, str]]:
        """(stage, model) for the base model and each training stage that produced one, in order."""
        out = [("base", self.base_model)]
        for s in TRAINING:
            model = self.results.get(s, {}).get("model")
            if model:
                out.append((s, model))
        return out

    def current_model(self) -> str:
        return self.models()[-1][1]


def stage_module(name: str):
    return importlib.import_module(f"lmlab.pipeline.stages.{name}")


# ---- checks before any work ---------------------------------------------------------------------

def check_inputs(recipe: Recipe, serve: bool = False) -> None:
    """Every file a stage reads must exist before the first stage starts: the error names each
    stage and input that is missing."""
    missing = []
    model = recipe.model
    if model and (model.startswith(("/", ".", "~")) or model.endswith(".gguf")) and not Path(model).expanduser().exists():
        missing.append(f"model: {model}")
    for name in recipe.enabled():
        cfg = getattr(recipe.stages, name)
        for what, path in stage_module(name).inputs(cfg, recipe):
            if not Path(path).expanduser().exists():
                missing.append(f"stage {name}: {what} {path}")
    if missing:
        raise LmlabError("missing input(s), nothing was run:\n  " + "\n  ".join(missing))
    if recipe.engine == "vllm" or (serve and recipe.stages.serve and recipe.stages.serve.engine == "vllm"):
        if importlib.util.find_spec("vllm") is None:
            raise LmlabError("engine: vllm needs vLLM on a CUDA machine (pip install vllm); use engine: lmlab")


def claim_folder(recipe: Recipe, out: Path, overwrite: bool) -> None:
    """DIR belongs to one recipe (by name): another recipe's run there is refused unless
    --overwrite, which clears the folder."""
    marker = out / "pipeline.json"
    if marker.is_file():
        owner = json.loads(marker.read_text(encoding="utf-8")).get("name")
        if owner != recipe.name:
            if not overwrite:
                raise LmlabError(f"{out} holds a run of recipe {owner!r}, not {recipe.name!r}; "
                                 "use another --out, or --overwrite to replace it")
            shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise LmlabError(f"{out} is not empty and holds no pipeline run; use another --out, or --overwrite")
    elif out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"name": recipe.name}), encoding="utf-8")


# ---- keys -----------------------------------------------------------------------------------------

def fingerprint(path: str) -> str:
    """Content hash of a file; for a folder, its files' names, sizes and modification times."""
    p = Path(path).expanduser()
    if p.is_file():
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]
    if p.is_dir():
        rows = sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns)
                      for f in p.rglob("*") if f.is_file())
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    return "absent"


def stage_key(name: str, ctx: Context) -> str:
    cfg = getattr(ctx.recipe.stages, name)
    module = stage_module(name)
    r = ctx.recipe
    base = r.model or "smollm2"
    parts = {
        "stage": name,
        "config": dataclasses.asdict(cfg),
        "globals": {"model": base, "model_files": fingerprint(base) if Path(base).exists() else None,
                    "seed": r.seed, "engine": r.engine},
        "files": {path: fingerprint(path) for _, path in module.inputs(cfg, r)},
        "upstream": {s: ctx.keys[s] for s in NEEDS[name] if s in ctx.keys},
        "environment": module.environment() if hasattr(module, "environment") else {},
        "code": fingerprint(module.__file__),  # an edited stage is a different stage
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- memory ---------------------------------------------------------------------------------------

class PeakMemory:
    """Peak resident memory of this process while a stage runs (sampled), and peak GPU memory."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        import os

        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        self.peak = self.rss()
        self._cuda = _cuda_reset()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        self.gpu_peak = _cuda_peak() if self._cuda else None


def _cuda_reset() -> bool:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return True
    return False


def _cuda_peak() -> int:
    import torch

    return int(torch.cuda.max_memory_allocated())


# ---- the run --------------------------------------------------------------------------------------

def run_pipeline(recipe: Recipe, out: str | Path, *, start_from: str | None = None, overwrite: bool = False,
                 serve: bool = False, progress: bool = True) -> dict:
    """Run the recipe into `out`; returns report.json's content. `start_from`: re-run that stage
    and every enabled stage after it, cached or not. `serve`: end with `lmlab serve` on the final
    model (the serve stage, with its defaults unless the recipe configures it)."""
    from tqdm import tqdm

    from lmlab.config import save_config
    from lmlab.pipeline import report

    if serve and recipe.stages.serve is None:
        from lmlab.pipeline.recipe import ServeStage

        recipe.stages.serve = ServeStage()
    stages = [s for s in recipe.enabled() if s != "serve" or serve]
    if start_from is not None and start_from not in stages:
        raise LmlabError(f"--from {start_from}: not a stage of this recipe; its stages: {', '.join(stages)}")
    if not stages:
        raise LmlabError(f"the recipe has no stage; give some of: {', '.join(STAGES)}")
    check_inputs(recipe, serve)
    out = Path(out)
    d = _dist(recipe)
    if d.main:
        claim_folder(recipe, out, overwrite)
        save_config(recipe, out / "recipe.yaml")
    d.barrier()
    ctx = Context(recipe, out, dist=d)
    forced = set(stages[stages.index(start_from):]) if start_from else set()
    states = {}
    bar = tqdm(total=len(stages), desc="pipeline", unit="stage", disable=not (progress and d.main),
               dynamic_ncols=True)
    t_all = time.perf_counter()
    try:
        for name in stages:
            if name == "serve":
                break  # after the report: it runs until stopped
            bar.set_description(f"pipeline: {name}")
            states[name] = run_stage(name, ctx, force=name in forced)
            bar.update(1)
    finally:
        bar.close()
        if d.main:
            summary = report.write(ctx, states, time.perf_counter() - t_all)
    if not d.main:
        return {}
    print_summary(ctx, states)
    if "serve" in stages:
        stage_module("serve").run(recipe.stages.serve, ctx, ctx.stage_dir("serve"))
    return summary


def run_stage(name: str, ctx: Context, force: bool = False) -> dict:
    """Run one stage (or take its cached result). Under torchrun rank 0 decides and writes the
    state; every rank trains (training stages), only rank 0 evaluates, packages and reports."""
    d = ctx.dist
    folder = ctx.stage_dir(name)
    state_path = folder / "state.json"
    key = stage_key(name, ctx)
    ctx.keys[name] = key
    old = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else None
    if old and old["key"] == key and old["status"] == "done" and not force:
        ctx.results[name] = old["result"]
        return {**old, "cached": True}
    if not d.main:
        if name not in TRAINING:
            # Rank 0 alone evaluates and packages; no collective waits on it (NCCL's timeout
            # is shorter than a long evaluation).
            return {"stage": name, "status": "rank 0"}
        d.barrier()  # rank 0 has prepared the folder
        stage_module(name).run(getattr(ctx.recipe.stages, name), ctx, folder)
        d.barrier()  # rank 0 has written the result
        new = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
        if new.get("status") == "done":
            ctx.results[name] = new["result"]
        else:
            ctx.keys[name] = key + "-unavailable"
        return new
    if old and (old["key"] != key or force):
        shutil.rmtree(folder)  # another config's outputs (or a forced re-run): start clean
    resumed = bool(old and old["key"] == key and old["status"] == "running" and not force)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"stage": name, "key": key, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "resumed": resumed}
    _write(state_path, state)
    if name in TRAINING:
        d.barrier()
    cfg = getattr(ctx.recipe.stages, name)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        with PeakMemory() as mem:
            result = stage_module(name).run(cfg, ctx, folder)
        status = "done"
    except Unavailable as e:
        result, status, mem = {"reason": str(e)}, "unavailable", None
        print(f"stage {name}: not available ({e})")
    seconds = time.perf_counter() - t0
    # CPU time (user + system, all threads): on a shared machine wall time depends on the load
    state.update(status=status, result=result, seconds=round(seconds, 2), cpu_seconds=round(_cpu_seconds() - cpu0, 2),
                 peak_rss_mb=round(mem.peak / 2**20, 1) if mem else None,
                 peak_gpu_mb=round(mem.gpu_peak / 2**20, 1) if mem and mem.gpu_peak else None)
    if status == "unavailable":
        # Not cached: the next run tries again (the area may be installed by then); downstream
        # keys see the difference through this key.
        ctx.keys[name] = key + "-unavailable"
        state_path.unlink(missing_ok=True)
        return {**state, "cached": False}
    ctx.results[name] = result
    _write(state_path, state)
    if name in TRAINING:
        d.barrier()
    return {**state, "cached": False}


def _cpu_seconds() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _dist(recipe: Recipe):
    """One process, or torchrun's: the process group starts here so that stages can agree."""
    import os

    from lmlab.train.distributed import Dist, setup

    return setup(recipe.device) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else Dist()


def print_summary(ctx: Context, states: dict) -> None:
    from lmlab.report.table import print_table

    rows = [{"stage": n, "status": ("cached" if s.get("cached") else s["status"]) + (" (resumed)" if s.get("resumed") else ""),
             "seconds": s.get("seconds"), "CPU seconds": s.get("cpu_seconds"), "peak RSS MB": s.get("peak_rss_mb"),
             "note": s["result"].get("reason", "") if s["status"] == "unavailable" else ""}
            for n, s in states.items()]
    print_table(rows, title=f"pipeline {ctx.recipe.name}")
    final = ctx.current_model()
    print(f"report: {ctx.out / 'report.html'}")
    print(f"serve the result: lmlab serve --model {final}")


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)


__all__ = ["run_pipeline", "run_stage", "check_inputs", "Context", "Unavailable", "as_dict"]
