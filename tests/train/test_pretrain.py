"""Pretraining from scratch: corpus formats, packed rows, the validation split, a tiny model that
learns (dense and Mixture-of-Experts), and impossible configs refused before any work."""

from __future__ import annotations

import json

import pytest
import torch

import lmlab
from lmlab.cli.main import main
from lmlab.config import load_config
from lmlab.errors import LmlabError
from lmlab.train import corpus
from lmlab.train.config import TrainConfig
from lmlab.train.data import IGNORE
from lmlab.train.pretrain import pack_rows, pretrain


def _cfg(out, steps=30, **pretrain_keys):
    arch = {"tokenizer": "bpe:300", "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "val_fraction": 0.1,
            "peak_flops": 1e11, **pretrain_keys}
    return load_config(TrainConfig, None, data="stories:300", output=str(out), max_length=64, batch_size=8,
                       max_steps=steps, lr=1e-2, warmup_steps=3, eval_every=20, progress=False, pretrain=arch)


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    return pretrain(_cfg(out, steps=80, dim=64)), out


def test_rows_are_full_with_documents_kept_apart():
    rows = pack_rows([[1, 2, 3, 0], [4, 5, 0], [6, 7, 8, 9, 0]], 4)
    assert rows["ids"].tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]  # the tail beyond 3 rows is dropped
    assert rows["positions"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 2, 3]]
    seg = rows["segments"]
    assert (seg[1, :3] == seg[1, 0]).all() and seg[1, 3] != seg[1, 2]
    # a document's first token is never predicted from the document before it
    assert rows["labels"].tolist() == [[IGNORE, 2, 3, 0], [IGNORE, 5, 0, IGNORE], [IGNORE, 8, 9, 0]]


def test_tiny_model_learns_falling_validation_loss(dense):
    result, out = dense
    evals = [json.loads(line)["eval_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "eval_loss" in json.loads(line)]
    assert len(evals) == 4 and evals[-1] < evals[0] - 0.3 and evals == sorted(evals, reverse=True)
    assert result["tokens_per_s"] > 0 and 0 < result["mfu"] < 1
    assert result["mfu"] == pytest.approx(result["tokens_per_s"] * result["flops_per_token"] / 1e11)
    assert result["sample_0"].startswith("Once upon a time")


def test_the_exported_model_and_its_tokenizer_load_for_generation(dense):
    result, _ = dense
    lm = lmlab.load(result["final"])
    assert lm.tokenizer.vocab_size == 300 and lm.config.n_layers == 2
    out = lm.generate("Once upon a time", raw=True, max_new_tokens=5, temperature=0)
    assert out.completion_tokens >= 1


def test_moe_variant_trains_and_reports_expert_balance(tmp_path):
    result = pretrain(_cfg(tmp_path, n_experts=4, experts_per_token=2, capacity_factor=1.25))
    assert result["active_params"] < result["params"]  # 2 of 4 experts per token
    assert 1.0 <= result["eval_expert_max_load"] <= 4.0
    assert sum(result["eval_expert_load"]) == pytest.approx(1.0, abs=1e-3)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("aux_loss" in m and "expert_max_load" in m for m in logged)
    assert logged[-1]["eval_loss"] < logged[0]["loss"] - 0.5
    assert lmlab.load(result["final"]).config.n_experts == 4


def test_corpus_reads_text_jsonl_parquet_and_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("one whole file")
    (tmp_path / "b.jsonl").write_text('{"text": "first"}\n\n{"text": "second"}\n')
    pq.write_table(pa.table({"text": ["third", "fourth"]}), tmp_path / "c.parquet")
    assert corpus.read_corpus(str(tmp_path / "b.jsonl")) == ["first", "second"]
    assert corpus.read_corpus(str(tmp_path)) == ["one whole file", "first", "second", "third", "fourth"]
    assert len(corpus.read_corpus("stories:5")) == 5 and corpus.stories(3) == corpus.stories(3)


@pytest.mark.parametrize("content, message", [('{"text": "ok"}\n{"txt": "no"}\n', r"bad\.jsonl:2: expected"),
                                              ('{"text": "ok"}\nnot json\n', r"bad\.jsonl:2: not a JSON object")])
def test_bad_corpus_lines_are_named(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(LmlabError, match=message):
        corpus.read_corpus(str(tmp_path / "bad.jsonl"))


def test_a_corpus_too_small_for_one_row_is_an_error(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.data, cfg.max_length = "stories:2", 512
    with pytest.raises(LmlabError, match="too few for a training row"):
        pretrain(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["pretrain.dim=30", "pretrain.n_heads=4"], "dim=30 is not divisible by n_heads=4"),
    (["pretrain.n_heads=6", "pretrain.n_kv_heads=4", "pretrain.dim=48"], "n_heads=6 is not a multiple of n_kv_heads=4"),
    (["pretrain.n_experts=4", "pretrain.experts_per_token=8"], "experts_per_token=8 must be between 1 and n_experts=4"),
])
def test_impossible_architectures_fail_before_any_work(tmp_path, capsys, overrides, message):
    # The corpus does not exist: the config error must come first, before anything is read.
    code = main(["train", "pretrain", "--data", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "run"),
                 *overrides])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
