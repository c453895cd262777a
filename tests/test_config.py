"""lmlab.config: YAML, flags generated from the dataclass, key=value overrides, in that order of
precedence; unknown keys and bad types refused in one line."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from lmlab.config import add_flags, from_args, load_config, save_config
from lmlab.errors import LmlabError
from lmlab.eval.config import EvalConfig
from lmlab.serve.config import ServeConfig


def parse(cls, argv):
    p = argparse.ArgumentParser()
    add_flags(p, cls)
    return from_args(cls, p.parse_args(argv))


def test_file_then_flags_then_overrides(tmp_path):
    f = tmp_path / "serve.yaml"
    f.write_text("port: 9000\nmax_queue: 8\nweights: int8\n")
    cfg = parse(ServeConfig, ["--config", str(f), "--max-queue", "16", "max_body_bytes=4096"])
    assert (cfg.port, cfg.max_queue, cfg.max_body_bytes, cfg.weights) == (9000, 16, 4096, "int8")
    # a flag left out does not overwrite the file's value; an override beats a flag
    cfg = parse(ServeConfig, ["--config", str(f), "--port", "1", "port=2"])
    assert (cfg.port, cfg.max_queue) == (2, 8)
    assert parse(ServeConfig, []) == ServeConfig()


def test_generated_flags_keep_the_documented_names():
    cfg = parse(EvalConfig, ["-m", "m", "-t", "hellaswag", "--task", "arc_easy", "--limit", "3", "--no-progress",
                             "--zero-shot-cot", "--k", "1,10", "-o", "out", "--format", "cloze"])
    assert cfg.tasks == ["hellaswag", "arc_easy"] and cfg.limit == 3 and cfg.progress is False
    assert cfg.zero_shot_cot and cfg.k == [1, 10] and cfg.output == "out" and cfg.format == "cloze"
    cfg = parse(ServeConfig, ["--served-model-name", "x", "--compile", "--engine", "vllm"])
    assert cfg.model_name == "x" and cfg.compile and cfg.engine == "vllm"
    with pytest.raises(SystemExit):
        parse(ServeConfig, ["--weights", "int3"])  # the formats are lmlab.model.formats.FORMATS


def test_unknown_keys_and_bad_types_are_refused(tmp_path):
    with pytest.raises(LmlabError, match="unknown key.*max_qeue"):
        parse(ServeConfig, ["max_qeue=3"])
    f = tmp_path / "e.yaml"
    f.write_text("tasks: [hellaswag]\nfewshot: many\n")
    with pytest.raises(LmlabError, match="fewshot must be int"):
        load_config(EvalConfig, f)
    with pytest.raises(LmlabError, match="format must be one of"):
        load_config(EvalConfig, overrides=["format=essay"])


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(EvalConfig, overrides=["tasks=[hellaswag, mmlu]", "k=[1, 5]", "limit=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(EvalConfig, tmp_path / "config.yaml") == cfg


def test_serve_refuses_an_unknown_key_before_loading_a_model(tmp_path):
    f = tmp_path / "serve.yaml"
    f.write_text("max_concurency: 4\n")
    r = subprocess.run([sys.executable, "-m", "lmlab.cli.main", "serve", "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown key(s) max_concurency" in r.stderr, r.stderr
