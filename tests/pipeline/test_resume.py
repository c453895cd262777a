"""A pipeline stopped inside the SFT stage resumes there (from the trainer's last checkpoint)
and ends with the same metrics as a run that was never stopped."""

from __future__ import annotations

import json

import pytest

from lmlab.errors import LmlabError


def _run(path, out):
    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import run_pipeline

    return run_pipeline(load_recipe(path), out, progress=False)


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way up handles it."""


def test_killed_during_sft_resumes_to_the_same_final_metrics(tiny_recipe, write_recipe, tmp_path, monkeypatch):
    from lmlab.train.trainer import Trainer

    path = write_recipe(tiny_recipe(stages=("sft", "eval")))
    whole = _run(path, tmp_path / "whole")

    save = Trainer.save

    def save_then_die(self):
        where = save(self)
        if self.state["step"] == 2:  # the step-2 checkpoint is on disk; steps 3 and 4 never run
            raise Killed()
        return where

    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(Killed):
        _run(path, tmp_path / "cut")
    monkeypatch.setattr(Trainer, "save", save)
    state = json.loads((tmp_path / "cut" / "stages" / "sft" / "state.json").read_text())
    assert state["status"] == "running"
    assert not (tmp_path / "cut" / "stages" / "eval").exists()

    resumed = _run(path, tmp_path / "cut")
    sft = resumed["stages"]["sft"]
    assert sft["resumed"] and sft["result"]["resumed_from_step"] == 2
    clock = ("tokens_per_s", "elapsed_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in clock} for r in rows]
    assert strip(sft["result"]["curve"]) == strip(whole["stages"]["sft"]["result"]["curve"])
    assert len(sft["result"]["curve"]) == 4
    a, b = whole["stages"]["eval"]["result"], resumed["stages"]["eval"]["result"]
    assert a["metrics"]["sft"] == b["metrics"]["sft"] and a["answers"] == b["answers"]
    assert a["metrics"]["sft"]["perplexity"]["value"] != a["metrics"]["base"]["perplexity"]["value"]


def test_a_stage_that_fails_is_resumed_not_cached(tiny_recipe, write_recipe, tmp_path, monkeypatch):
    import lmlab.pipeline.stages.sft as stage

    path = write_recipe(tiny_recipe(stages=("sft",)))

    def fail(cfg, ctx, folder):
        raise LmlabError("injected failure")

    monkeypatch.setattr(stage, "run", fail)
    with pytest.raises(LmlabError, match="injected"):
        _run(path, tmp_path / "run")
    monkeypatch.undo()
    report = _run(path, tmp_path / "run")
    assert report["stages"]["sft"]["status"] == "done" and report["stages"]["sft"]["resumed"]
