"""Bad recipes and folders fail before any work, with messages that say what is valid."""

from __future__ import annotations

import pytest

from lmlab.errors import LmlabError


def _load(write_recipe, recipe, overrides=()):
    from lmlab.pipeline.recipe import load_recipe

    return load_recipe(write_recipe(recipe), list(overrides))


def test_unknown_stage_lists_the_valid_stages(write_recipe):
    with pytest.raises(LmlabError, match=r"unknown stage\(s\) finetune; valid stages: data, adapt, sft, "
                                         r"preference, eval, package, serve"):
        _load(write_recipe, {"stages": {"finetune": {}}})


def test_unknown_key_in_a_stage_lists_its_valid_keys(write_recipe):
    with pytest.raises(LmlabError, match=r"sft: unknown key\(s\) stepz; valid: data, method, .*max_steps"):
        _load(write_recipe, {"stages": {"sft": {"stepz": 3}}})
    with pytest.raises(LmlabError, match=r"unknown key\(s\) modle; valid: name, model"):
        _load(write_recipe, {"modle": "x", "stages": {"sft": {}}})


def test_wrong_type_and_choice_are_named(write_recipe):
    with pytest.raises(LmlabError, match=r"preference: method must be one of dpo, ppo, grpo, got 'kto'"):
        _load(write_recipe, {"stages": {"preference": {"method": "kto"}}})
    with pytest.raises(LmlabError, match=r"max_steps must be int, got 'many'"):
        _load(write_recipe, {"stages": {"sft": {}}}, ["stages.sft.max_steps=many"])


def test_a_bare_stage_is_on_with_its_defaults_and_false_is_off(write_recipe):
    r = _load(write_recipe, {"stages": {"sft": None, "eval": False, "package": {}}})
    assert r.enabled() == ["sft", "package"] and r.stages.sft.max_steps == 40
    assert r.name == "recipe"  # the file's name when the recipe gives none


def test_missing_inputs_are_all_named_before_any_work(write_recipe, tmp_path, tiny_folder, monkeypatch):
    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import run_pipeline
    from lmlab.pipeline.stages import sft

    monkeypatch.setattr(sft, "run", lambda *a: pytest.fail("a stage ran"))
    path = write_recipe({"model": str(tiny_folder), "stages": {
        "sft": {}, "preference": {"data": str(tmp_path / "no_pairs.jsonl")},
        "eval": {"hellaswag_data": str(tmp_path / "no_hellaswag.jsonl"), "gsm8k": 0, "perplexity": ""}}})
    with pytest.raises(LmlabError) as e:
        run_pipeline(load_recipe(path), tmp_path / "out", progress=False)
    msg = str(e.value)
    assert "nothing was run" in msg
    assert f"stage preference: pairs {tmp_path / 'no_pairs.jsonl'}" in msg
    assert f"stage eval: hellaswag data {tmp_path / 'no_hellaswag.jsonl'}" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(LmlabError, match="model: ./nowhere"):
        run_pipeline(load_recipe(write_recipe({"model": "./nowhere", "stages": {"sft": {}}})), tmp_path / "o2",
                     progress=False)


def test_a_folder_holding_another_recipes_run_is_refused_unless_overwrite(write_recipe, tmp_path):
    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import claim_folder

    out = tmp_path / "out"
    claim_folder(load_recipe(write_recipe({"name": "first", "stages": {"sft": {}}})), out, overwrite=False)
    (out / "stages").mkdir()
    second = load_recipe(write_recipe({"name": "second", "stages": {"sft": {}}}))
    with pytest.raises(LmlabError, match=r"holds a run of recipe 'first', not 'second'; .*--overwrite"):
        claim_folder(second, out, overwrite=False)
    claim_folder(second, out, overwrite=True)
    assert not (out / "stages").exists()  # the other run is gone
    claim_folder(second, out, overwrite=False)  # the same recipe again: its own folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(LmlabError, match="not empty and holds no pipeline run"):
        claim_folder(second, other, overwrite=False)


def test_from_a_stage_the_recipe_lacks_is_refused(write_recipe, tmp_path):
    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import run_pipeline

    with pytest.raises(LmlabError, match=r"--from preference: not a stage of this recipe; its stages: sft"):
        run_pipeline(load_recipe(write_recipe({"stages": {"sft": {}}})), tmp_path / "o", start_from="preference")


def test_cli_reports_the_error_without_a_traceback(write_recipe, tmp_path, capsys):
    from lmlab.cli.main import main

    code = main(["pipeline", str(write_recipe({"stages": {"sfft": {}}})), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "valid stages: data, adapt, sft" in capsys.readouterr().err
