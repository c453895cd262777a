"""Mixture-of-Experts FFN: Mixtral's computation (transformers as the reference), Switch's
load-balancing loss, capacity, and impossible configs refused up front."""

from __future__ import annotations

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.model.config import ModelConfig
from lmlab.model.moe import MoE, aux_loss, expert_load
from lmlab.model.transformer import Transformer

def _moe(n_experts=4, k=2, capacity=0.0, seed=0) -> MoE:
    torch.manual_seed(seed)
    m = MoE(ModelConfig(vocab_size=10, dim=16, n_heads=2, n_kv_heads=2, ffn_dim=24, n_experts=n_experts,
                        experts_per_token=k, capacity_factor=capacity))
    for p in m.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    return m


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    """(our MoE model, transformers' Mixtral loaded from the folder we saved it to)."""
    transformers = pytest.importorskip("transformers")
    from lmlab.model.io.hf import save_model

    torch.manual_seed(0)
    ours = Transformer(ModelConfig(model_type="mixtral", vocab_size=97, dim=32, n_layers=2, n_heads=4,
                                   n_kv_heads=2, ffn_dim=48, n_experts=4, experts_per_token=2, max_seq_len=64))
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.2)
    folder = tmp_path_factory.mktemp("mixtral")
    save_model(ours, folder)
    return ours.eval(), transformers.AutoModelForCausalLM.from_pretrained(folder).eval()


pytestmark = pytest.mark.usefixtures("one_thread")

def test_logits_match_transformers_mixtral(mixtral):
    ours, hf = mixtral
    assert hf.config.num_local_experts == 4 and hf.config.num_experts_per_tok == 2
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_saved_moe_model_reloads_to_the_same_logits(mixtral, tmp_path):
    from lmlab.model.io.hf import load_model, save_model

    ours, _ = mixtral
    save_model(ours, tmp_path)
    again = load_model(tmp_path)
    assert again.config.n_experts == 4
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        # not bitwise: a reloaded weight may take another GEMM kernel (summation order) on some CPUs
        torch.testing.assert_close(again(ids), ours(ids), rtol=1e-5, atol=1e-6)


def test_balancing_loss_matches_transformers():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    m = _moe()
    x = torch.randn(3, 7, 16)
    m(x)
    logits = torch.nn.functional.linear(x.reshape(-1, 16), m.gate.weight)
    torch.testing.assert_close(m.aux_loss, load_balancing_loss_func((logits,), 4, 2))


def test_balancing_loss_is_1_at_perfect_balance_and_E_when_one_expert_takes_all():
    m = _moe(k=1)
    with torch.no_grad():
        m.gate.weight.copy_(torch.eye(4, 16) * 50)  # a confident router: token i -> expert i
    m(torch.eye(4, 16).repeat(2, 1))
    assert m.aux_loss.item() == pytest.approx(1.0, rel=1e-3)
    assert m.load.tolist() == [0.25] * 4
    x = torch.zeros(8, 16)
    x[:, 0] = 1.0  # every token -> expert 0
    m(x)
    assert m.aux_loss.item() == pytest.approx(4.0, rel=1e-3)
    assert m.load.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_capacity_drops_overflow_only_while_training():
    m = _moe(n_experts=2, k=1, capacity=1.0)
    with torch.no_grad():
        m.gate.weight.zero_()
        m.gate.weight[0, 0] = 10.0  # every token with x0 > 0 goes to expert 0
    x = torch.randn(10, 16)
    x[:, 0] = 1.0
    m.train()
    y_train = m(x)
    assert m.dropped == pytest.approx(0.5)  # capacity = 1.0 * 10 / 2 = 5 of the 10 choices kept
    assert (y_train[5:] == 0).all() and (y_train[:5] != 0).any()  # first come, first served
    m.eval()
    assert (m(x)[5:] != 0).any() and m.dropped == 0


def test_model_reports_load_and_aux_loss_per_layer():
    c = ModelConfig(vocab_size=50, dim=16, n_layers=3, n_heads=2, n_kv_heads=1, ffn_dim=16, n_experts=4,
                    experts_per_token=2)
    model = Transformer(c)
    model(torch.randint(0, 50, (2, 9)))
    load = expert_load(model)
    assert load.shape == (3, 4) and torch.allclose(load.sum(1), torch.ones(3))
    assert float(aux_loss(model).detach()) >= 2.0 - 1e-5  # never below k


@pytest.mark.parametrize("kw, message", [
    (dict(dim=30, n_heads=4), "dim=30 is not divisible by n_heads=4"),
    (dict(dim=48, n_heads=6, n_kv_heads=4), "n_heads=6 is not a multiple of n_kv_heads=4"),
    (dict(n_experts=4, experts_per_token=5), "experts_per_token=5 must be between 1 and n_experts=4"),
    (dict(family="gpt2", n_experts=4), "needs the llama family"),
    (dict(n_layers=0), "n_layers must be >= 1"),
])
def test_impossible_configs_are_refused(kw, message):
    with pytest.raises(LmlabError, match=message):
        ModelConfig(**{"dim": 32, "n_heads": 4, "n_kv_heads": 4, **kw})
