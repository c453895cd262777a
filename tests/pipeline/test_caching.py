"""Stage caching: a second run does no work; a changed setting re-runs exactly the stages
downstream of it."""

from __future__ import annotations

import json

import pytest


def _run(path, out, overrides=(), **kw):
    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import run_pipeline

    return run_pipeline(load_recipe(path, list(overrides)), out, progress=False, **kw)


def _status(report):
    return {n: "cached" if s.get("cached") else s["status"] for n, s in report["stages"].items()}


@pytest.fixture
def counted(monkeypatch):
    """How often each stage's run() does work."""
    import importlib

    calls = {}
    for name in ("sft", "preference", "eval", "package"):
        module = importlib.import_module(f"lmlab.pipeline.stages.{name}")

        def wrapped(cfg, ctx, folder, _run=module.run, _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            return _run(cfg, ctx, folder)

        monkeypatch.setattr(module, "run", wrapped)
    return calls


def test_second_run_does_no_work_and_a_change_reruns_exactly_its_downstream(tiny_recipe, write_recipe, tmp_path,
                                                                            counted):
    path = write_recipe(tiny_recipe())
    out = tmp_path / "run"
    first = _run(path, out)
    assert _status(first) == dict.fromkeys(["sft", "preference", "eval", "package"], "done")
    assert counted == dict.fromkeys(["sft", "preference", "eval", "package"], 1)
    sft_model = first["stages"]["sft"]["result"]["model"]
    mtime = (out / "stages" / "sft" / "train" / "final" / "model.safetensors").stat().st_mtime_ns

    again = _run(path, out)
    assert _status(again) == dict.fromkeys(["sft", "preference", "eval", "package"], "cached")
    assert counted == dict.fromkeys(["sft", "preference", "eval", "package"], 1)  # no stage did any work
    assert again["stages"]["eval"]["result"] == first["stages"]["eval"]["result"]

    # The preference stage changes: it and what uses its model re-run; sft does not.
    changed = _run(path, out, ["stages.preference.beta=0.5"])
    assert _status(changed) == {"sft": "cached", "preference": "done", "eval": "done", "package": "done"}
    assert counted == {"sft": 1, "preference": 2, "eval": 2, "package": 2}
    assert (out / "stages" / "sft" / "train" / "final" / "model.safetensors").stat().st_mtime_ns == mtime
    assert changed["stages"]["sft"]["result"]["model"] == sft_model
    # eval scored again only the model that changed: base and sft come from its per-model cache
    models = sorted(p.name.split("-")[0] for p in (out / "stages" / "eval" / "models").iterdir())
    assert models == ["base", "preference", "preference", "sft"] or models == ["base", "preference", "sft"]

    # An eval-only change re-runs eval alone (package does not use eval's outputs).
    _run(path, out, ["stages.preference.beta=0.5", "stages.eval.max_new_tokens=3"])
    assert counted == {"sft": 1, "preference": 2, "eval": 3, "package": 2}

    # --from re-runs that stage and every one after it, cached or not.
    _run(path, out, ["stages.preference.beta=0.5", "stages.eval.max_new_tokens=3"], start_from="eval")
    assert counted == {"sft": 1, "preference": 2, "eval": 4, "package": 3}


def test_stage_state_records_time_memory_and_key(tiny_recipe, write_recipe, tmp_path):
    path = write_recipe(tiny_recipe(stages=("sft",)))
    report = _run(path, tmp_path / "run")
    s = report["stages"]["sft"]
    assert s["seconds"] > 0 and s["peak_rss_mb"] > 50 and len(s["key"]) == 16
    state = json.loads((tmp_path / "run" / "stages" / "sft" / "state.json").read_text())
    assert state["status"] == "done" and state["key"] == s["key"]
