"""Scaling arithmetic: parameter counts, C = 6ND, Chinchilla's compute-optimal sizes (checked
against Table 3 of Hoffmann et al. 2022) and `lmlab scale`."""

from __future__ import annotations

import json
import math

import pytest

from lmlab.cli.main import main
from lmlab.errors import LmlabError
from lmlab.model.config import ModelConfig
from lmlab.train import scaling

SMOLLM2_135M = ModelConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
                           max_seq_len=2048, tie_embeddings=True)


@pytest.mark.parametrize("text, value", [("135M", 1.35e8), ("7B", 7e9), ("1e18", 1e18), ("2.5k", 2500), ("12", 12)])
def test_counts_read_with_suffixes(text, value):
    assert scaling.parse_count(text) == pytest.approx(value)


def test_unreadable_count_is_an_error():
    with pytest.raises(LmlabError, match="'lots' is not a number"):
        scaling.parse_count("lots")


def test_smollm2_135m_has_its_published_parameter_count():
    counts = scaling.count_params(SMOLLM2_135M)
    assert counts["total"] == 134_515_008  # HF's num_parameters() for SmolLM2-135M
    assert counts["embedding"] == 49152 * 576
    assert counts["active"] == counts["total"]  # the tied output layer is a matmul once more


def test_moe_counts_only_the_chosen_experts_as_active():
    from lmlab.model.transformer import Transformer

    c = ModelConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, n_experts=8,
                    experts_per_token=2)
    counts = scaling.count_params(c)
    assert counts["total"] == sum(p.numel() for p in Transformer(c).parameters())
    experts = 2 * 8 * 3 * 32 * 64  # layers * experts * (gate, up, down) * dim * ffn
    assert counts["active"] == counts["total"] - counts["embedding"] - experts * 6 // 8  # untied head: in total


def test_flops_per_token_is_6n_plus_attention():
    n = scaling.count_params(SMOLLM2_135M)["active"]
    assert scaling.flops_per_token(SMOLLM2_135M, 2048) == 6 * n + 12 * 30 * 2048 * 576


@pytest.mark.parametrize("params, flops, tokens", [  # Hoffmann et al. (2022), Table 3
    (400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9), (175e9, 3.85e24, 3.7e12)])
def test_chinchilla_optimal_sizes_match_the_paper(params, flops, tokens):
    n, d = scaling.chinchilla_optimal(flops)
    assert n == pytest.approx(params, rel=0.03)
    assert d == pytest.approx(tokens, rel=0.05)
    assert d / n == pytest.approx(20)
    assert scaling.training_flops(n, d) == pytest.approx(flops)


def test_plan_from_params_uses_20_tokens_per_param_and_6nd():
    r = scaling.plan(params=135e6, flops_per_s=1e12)
    assert r["tokens"] == pytest.approx(2.7e9)
    assert r["train_flops"] == pytest.approx(6 * 135e6 * 2.7e9)
    assert r["training_seconds"] == pytest.approx(r["train_flops"] / 1e12)
    assert r["tokens_per_s"] == pytest.approx(1e12 / (6 * 135e6))


def test_plan_needs_exactly_one_budget():
    with pytest.raises(LmlabError, match="exactly one"):
        scaling.plan(params=1e6, flops=1e18, flops_per_s=1.0)


def test_cli_params(capsys):
    assert main(["scale", "--params", "135M", "--flops-per-s", "1e12", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tokens"] == pytest.approx(2.7e9) and r["train_flops"] == pytest.approx(2.187e18)
    assert r["training_time"] == "25.3 days"


def test_cli_flops(capsys):
    assert main(["scale", "--flops", "1e18", "--flops-per-s", "1e12", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"] == pytest.approx(math.sqrt(1e18 / 120))
    assert r["tokens"] == pytest.approx(20 * r["params"])
    assert 6 * r["params"] * r["tokens"] == pytest.approx(1e18)


def test_cli_config_counts_the_recipe_architecture(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_length: 128\npretrain: {dim: 64, n_layers: 2, n_heads: 4, tokenizer: 'bpe:1000'}\n")
    assert main(["scale", "--config", str(recipe), "--flops-per-s", "1e12", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    layer = 4 * 64 * 64 + 3 * 64 * 192 + 2 * 64  # attention, SwiGLU (ffn 192 = 8/3 * 64 rounded to 64), norms
    assert r["params_total"] == 1000 * 64 + 2 * layer + 64
    assert r["params"] == r["params_active"]


def test_cli_rejects_a_bad_count(capsys):
    assert main(["scale", "--params", "many"]) == 2
    assert "'many' is not a number" in capsys.readouterr().err
