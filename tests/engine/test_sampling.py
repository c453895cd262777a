"""SamplingParams validation and the logits processors: temperature, top-k, top-p, greedy, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.engine.sampling import SamplingParams, next_tokens, process_logits
from lmlab.errors import LmlabError


def _kept(logits: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


def _logits_for(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs).log()[None]


# ---- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    (dict(top_p=-0.1), r"top_p must be in \(0, 1\]"),
    (dict(temperature=-0.5), r"temperature must be >= 0.*got -0.5"),
    (dict(temperature=math.nan), r"temperature must be >= 0"),
    (dict(top_k=-1), r"top_k must be >= 0.*got -1"),
    (dict(max_new_tokens=0), r"max_new_tokens must be >= 1, got 0"),
    (dict(max_new_tokens=-3), r"max_new_tokens must be >= 1"),
])
def test_invalid_params_raise_lmlab_error_with_valid_range(kwargs, message):
    with pytest.raises(LmlabError, match=message):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(top_p=1.0), dict(top_p=1e-6), dict(temperature=0.0), dict(top_k=0),
                                    dict(top_k=1), dict(max_new_tokens=1), dict(temperature=5.0)])
def test_boundary_values_are_accepted(kwargs):
    SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs,greedy", [(dict(temperature=0.0), True), (dict(top_k=1), True),
                                           (dict(temperature=0.7), False), (dict(top_k=2), False)])
def test_greedy_when_temperature_zero_or_top_k_one(kwargs, greedy):
    assert SamplingParams(**kwargs).greedy is greedy


# ---- processors ---------------------------------------------------------------------------------

def test_temperature_divides_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 4.0]])
    out = process_logits(logits, SamplingParams(temperature=0.5))
    torch.testing.assert_close(out, logits / 0.5)
    torch.testing.assert_close(process_logits(logits, SamplingParams(temperature=1.0)), logits)


def test_process_logits_returns_float32_for_half_input():
    out = process_logits(torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16), SamplingParams(temperature=1.0))
    assert out.dtype == torch.float32


def test_top_k_keeps_exactly_the_k_largest_per_row():
    logits = torch.tensor([[0.1, 3.0, -2.0, 2.5, 1.0, 0.0],
                           [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    out = process_logits(logits, SamplingParams(temperature=1.0, top_k=3))
    assert _kept(out[0]) == {1, 3, 4}
    assert _kept(out[1]) == {0, 1, 2}
    kept = torch.isfinite(out)
    torch.testing.assert_close(out[kept], logits[kept])  # survivors unchanged


def test_top_k_larger_than_vocab_keeps_everything():
    logits = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(process_logits(logits, SamplingParams(temperature=1.0, top_k=50)), logits)


@pytest.mark.parametrize("top_p,kept", [
    (0.4, {2}),  # the top token alone (0.5) reaches 0.4
    (0.6, {2, 0}),  # 0.5 < 0.6 <= 0.5 + 0.25
    (0.8, {2, 0, 3}),  # 0.75 < 0.8 <= 0.875
    (0.95, {2, 0, 3, 1}),
    (1.0, {2, 0, 3, 1}),
])
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    # probabilities by token id: 0 -> 0.25, 1 -> 0.125, 2 -> 0.5, 3 -> 0.125 (ties broken either way)
    logits = _logits_for([0.25, 0.125, 0.5, 0.125])
    out = process_logits(logits, SamplingParams(temperature=1.0, top_p=top_p))[0]
    if top_p == 0.8:  # the two 0.125 tokens tie; exactly one of them makes the cut
        assert _kept(out) in ({2, 0, 3}, {2, 0, 1})
    else:
        assert _kept(out) == kept


def test_top_p_applies_after_top_k():
    logits = _logits_for([0.4, 0.3, 0.2, 0.1])
    # Without top_k tokens 0 and 1 hold 0.7 < 0.75, so token 2 is needed; after top_k=3 renormalises
    # to 4/9, 3/9, 2/9 they hold 7/9 >= 0.75 and token 2 goes.
    assert _kept(process_logits(logits, SamplingParams(temperature=1.0, top_p=0.75))[0]) == {0, 1, 2}
    assert _kept(process_logits(logits, SamplingParams(temperature=1.0, top_p=0.75, top_k=3))[0]) == {0, 1}


def test_top_p_applies_after_temperature():
    logits = _logits_for([0.4, 0.3, 0.2, 0.1])
    kept = lambda t: _kept(process_logits(logits, SamplingParams(temperature=t, top_p=0.6))[0])  # noqa: E731
    assert kept(1.0) == {0, 1}
    assert kept(100.0) == {0, 1, 2}  # a flat distribution needs more tokens to reach the same mass
    assert kept(0.1) == {0}  # a sharp one fewer


def test_top_p_always_keeps_the_most_likely_token():
    logits = _logits_for([0.97, 0.01, 0.01, 0.01])
    assert _kept(process_logits(logits, SamplingParams(temperature=1.0, top_p=1e-6))[0]) == {0}


# ---- choosing tokens ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(temperature=0.0), dict(temperature=2.0, top_k=1)])
def test_greedy_picks_argmax_per_row(kwargs):
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0], [9.0, 1.0, 3.0, 2.0]])
    for _ in range(5):
        assert next_tokens(logits, SamplingParams(**kwargs), None).tolist() == [2, 0]


def test_sampling_never_picks_a_removed_token():
    logits = torch.zeros(4, 50)
    p = SamplingParams(temperature=1.0, top_k=3, seed=0)
    logits[:, [7, 19, 42]] = 1.0
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    picked = {t for _ in range(50) for t in next_tokens(logits, p, gens).tolist()}
    assert picked == {7, 19, 42}


def test_sampling_follows_the_distribution():
    probs = [0.6, 0.3, 0.1]
    g = torch.Generator().manual_seed(0)
    tokens = torch.cat([next_tokens(_logits_for(probs), SamplingParams(temperature=1.0), [g]) for _ in range(3000)])
    freq = torch.bincount(tokens, minlength=3).float() / 3000
    torch.testing.assert_close(freq, torch.tensor(probs), atol=0.03, rtol=0)


def _draw(logits, seeds, steps=20):
    p = SamplingParams(temperature=1.0)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return torch.stack([next_tokens(logits, p, gens) for _ in range(steps)], dim=1)  # [B, steps]


def test_seeded_sampling_is_reproducible():
    logits = torch.zeros(3, 1000)
    assert torch.equal(_draw(logits, [1, 2, 3]), _draw(logits, [1, 2, 3]))
    assert not torch.equal(_draw(logits, [1, 2, 3]), _draw(logits, [4, 5, 6]))


def test_per_row_generators_do_not_depend_on_batch_composition():
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
    logits[1] = logits[0]
    batch = _draw(logits, [7, 7, 8, 9])
    for i, seed in enumerate([7, 7, 8, 9]):
        assert torch.equal(batch[i], _draw(logits[i:i + 1], [seed])[0]), f"row {i}"
    assert torch.equal(batch[0], batch[1])  # same seed, same logits -> same tokens, whatever the neighbours


def test_unseeded_sampling_uses_the_global_generator():
    logits = torch.zeros(2, 1000)
    torch.manual_seed(3)
    a = next_tokens(logits, SamplingParams(temperature=1.0), None)
    torch.manual_seed(3)
    assert torch.equal(a, next_tokens(logits, SamplingParams(temperature=1.0), None))
