"""SamplingParams validation and the logits processors (`lmlab.engine.processors`): penalties,
logit bias, temperature, top-k, top-p, min-p, typical-p and the sampler, row by row.

The distribution tests draw thousands of tokens from a small vocabulary and compare the
frequencies with the distribution each warper defines, computed here independently with numpy
from the raw logits (chi-square goodness of fit, p > 0.001 with a fixed torch seed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmlab.engine import processors
from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError


def _kept(logits: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


def _logits_for(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs).log()[None]


def _warp(logits: torch.Tensor, **kw) -> torch.Tensor:
    """One row (or every row) warped with the same params."""
    p = SamplingParams(**kw)
    return processors.warp(logits.clone(), [p] * logits.shape[0])


# ---- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    (dict(top_p=-0.1), r"top_p must be in \(0, 1\]"),
    (dict(top_p=math.nan), r"top_p must be in \(0, 1\]"),
    (dict(temperature=-0.5), r"temperature must be >= 0.*got -0.5"),
    (dict(temperature=math.nan), r"temperature must be >= 0"),
    (dict(top_k=-2), r"top_k must be >= 1, or 0 / -1 for off, got -2"),
    (dict(min_p=1.5), r"min_p must be in \[0, 1\], got 1.5"),
    (dict(min_p=-0.1), r"min_p must be in \[0, 1\]"),
    (dict(typical_p=0.0), r"typical_p must be in \(0, 1\], got 0"),
    (dict(typical_p=1.2), r"typical_p must be in \(0, 1\]"),
    (dict(repetition_penalty=0.0), r"repetition_penalty must be > 0, got 0"),
    (dict(presence_penalty=2.5), r"presence_penalty must be in \[-2, 2\], got 2.5"),
    (dict(frequency_penalty=-3), r"frequency_penalty must be in \[-2, 2\], got -3"),
    (dict(max_tokens=0), r"max_tokens must be >= 1, got 0"),
    (dict(max_tokens=-3), r"max_tokens must be >= 1"),
    (dict(max_tokens=4, min_tokens=5), r"min_tokens must be in \[0, max_tokens=4\], got 5"),
    (dict(min_tokens=-1), r"min_tokens must be in \[0, "),
    (dict(n=0), r"n must be >= 1, got 0"),
    (dict(n=3, best_of=2), r"best_of must be >= n=3, got 2"),
    (dict(logprobs=21), r"logprobs must be in \[0, 20\], got 21"),
    (dict(prompt_logprobs=-1), r"prompt_logprobs must be in \[0, 20\], got -1"),
    (dict(stop=5), r"stop must be a string or a list of non-empty strings, got 5"),
    (dict(stop=[""]), r"stop must be a string or a list of non-empty strings"),
    (dict(stop=["ok", 3]), r"stop must be a string or a list of non-empty strings"),
    (dict(stop_token_ids=7), r"stop_token_ids must be a list of ints, got 7"),
    (dict(stop_token_ids=[1.5]), r"stop_token_ids must be a list of ints"),
    (dict(logit_bias=[1, 2]), r"logit_bias must be a dict"),
])
def test_invalid_params_raise_lmlab_error_with_valid_range(kwargs, message):
    with pytest.raises(LmlabError, match=message):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(top_p=1.0), dict(top_p=1e-6), dict(temperature=0.0), dict(temperature=5.0), dict(top_k=0),
    dict(top_k=-1), dict(top_k=1), dict(max_tokens=1), dict(min_p=0.0), dict(min_p=1.0), dict(typical_p=1.0),
    dict(presence_penalty=-2.0), dict(frequency_penalty=2.0), dict(min_tokens=3, max_tokens=3),
    dict(n=2, best_of=2), dict(logprobs=0), dict(logprobs=20), dict(prompt_logprobs=0), dict(stop="x"),
    dict(stop_token_ids=[0, 5]), dict(logit_bias={"3": 1})])
def test_boundary_values_are_accepted(kwargs):
    p = SamplingParams(**kwargs)  # raises LmlabError if a valid boundary were rejected
    normalised = {"top_k": {-1: 0}, "stop": {"x": ["x"]}}
    for k, v in kwargs.items():
        if k != "logit_bias":
            assert getattr(p, k) == normalised.get(k, {}).get(v, v) if not isinstance(v, list) else getattr(p, k) == v


def test_normalisation_of_stop_top_k_and_logit_bias():
    p = SamplingParams(stop="END", top_k=-1, logit_bias={"3": 1})
    assert p.stop == ["END"] and p.top_k == 0 and p.logit_bias == {3: 1.0}


@pytest.mark.parametrize("kwargs,greedy", [(dict(temperature=0.0), True), (dict(top_k=1), True),
                                           (dict(temperature=0.7), False), (dict(top_k=2), False)])
def test_greedy_when_temperature_zero_or_top_k_one(kwargs, greedy):
    assert SamplingParams(**kwargs).greedy is greedy


@pytest.mark.parametrize("kwargs,samples", [({}, 1), (dict(n=3), 3), (dict(n=2, best_of=5), 5)])
def test_samples_is_best_of_or_n(kwargs, samples):
    assert SamplingParams(**kwargs).samples == samples


# ---- penalties and bias -------------------------------------------------------------------------

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 0.0, -3.0, 1.5],
                       [1.0, 1.0, -2.0, 4.0, 0.25, -0.5]])


def test_repetition_penalty_is_ctrl_over_seen_ids_each_once():
    p = SamplingParams(repetition_penalty=2.0)
    seen = [torch.tensor([0, 1, 1, 3, 0]), torch.tensor([], dtype=torch.long)]  # duplicates count once
    out = processors.penalise(LOGITS.clone(), [p, p], seen, [None, None])
    expect = LOGITS.clone()
    expect[0, 0], expect[0, 1], expect[0, 3] = 2.0 / 2, -1.0 * 2, 0.0
    torch.testing.assert_close(out, expect, rtol=0, atol=0)


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_transformers(penalty):
    transformers = pytest.importorskip("transformers")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g) * 3
    seen = [torch.randint(0, 50, (n,), generator=g) for n in (7, 12, 1)]
    p = SamplingParams(repetition_penalty=penalty)
    ours = processors.penalise(logits.clone(), [p] * 3, seen, [None] * 3)
    proc = transformers.RepetitionPenaltyLogitsProcessor(penalty)
    for i in range(3):
        ref = proc(seen[i][None], logits[i:i + 1].clone())
        torch.testing.assert_close(ours[i:i + 1], ref, rtol=0, atol=0)


def test_presence_and_frequency_penalties_use_output_counts():
    p = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    counts = torch.tensor([0.0, 3.0, 1.0, 0.0, 0.0, 2.0])
    off = SamplingParams()
    out = processors.penalise(LOGITS.clone(), [p, off], [torch.tensor([0, 3]), torch.tensor([1])],
                              [counts, None])
    expect = LOGITS.clone()
    expect[0] -= 0.25 * counts + 0.5 * (counts > 0).float()
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-7)  # row 1 untouched; `seen` plays no part


def test_negative_presence_penalty_raises_logits():
    p = SamplingParams(presence_penalty=-1.0)
    counts = torch.tensor([1.0, 0, 0, 0, 0, 0])
    out = processors.penalise(LOGITS[:1].clone(), [p], [torch.tensor([0])], [counts])
    assert out[0, 0].item() == pytest.approx(3.0) and torch.equal(out[0, 1:], LOGITS[0, 1:])


def test_logit_bias_adds_to_the_listed_ids_of_its_row_only():
    p = SamplingParams(logit_bias={2: 1.5, 4: -100.0, 5: float("-inf")})
    out = processors.bias(LOGITS.clone(), [p, SamplingParams()])
    expect = LOGITS.clone()
    expect[0, 2] += 1.5
    expect[0, 4] -= 100.0
    expect[0, 5] = float("-inf")
    torch.testing.assert_close(out, expect, rtol=0, atol=0)


# ---- warpers: exact sets ------------------------------------------------------------------------

def test_temperature_divides_logits_and_greedy_rows_are_left_alone():
    logits = torch.tensor([[2.0, -1.0, 0.5, 4.0], [2.0, -1.0, 0.5, 4.0]])
    out = processors.warp(logits.clone(), [SamplingParams(temperature=0.5), SamplingParams(temperature=0.0)])
    torch.testing.assert_close(out[0], logits[0] / 0.5)
    torch.testing.assert_close(out[1], logits[1])
    torch.testing.assert_close(_warp(logits, temperature=1.0), logits)


def test_top_k_keeps_exactly_the_k_largest_per_row():
    logits = torch.tensor([[0.1, 3.0, -2.0, 2.5, 1.0, 0.0],
                           [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    out = _warp(logits, top_k=3)
    assert _kept(out[0]) == {1, 3, 4}
    assert _kept(out[1]) == {0, 1, 2}
    kept = torch.isfinite(out)
    torch.testing.assert_close(out[kept], logits[kept])  # survivors unchanged


def test_top_k_per_row_in_one_batch():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]] * 3)
    out = processors.warp(logits.clone(), [SamplingParams(top_k=2), SamplingParams(), SamplingParams(top_k=4)])
    assert [_kept(r) for r in out] == [{0, 1}, set(range(6)), {0, 1, 2, 3}]


def test_top_k_larger_than_vocab_keeps_everything():
    logits = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_warp(logits, top_k=50), logits)


@pytest.mark.parametrize("top_p,kept", [
    (0.4, {2}),  # the top token alone (0.5) reaches 0.4
    (0.6, {2, 0}),  # 0.5 < 0.6 <= 0.5 + 0.25
    (0.8, {2, 0, 3}),  # 0.75 < 0.8 <= 0.875
    (0.95, {2, 0, 3, 1}),
    (1.0, {2, 0, 3, 1}),
])
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    # probabilities by token id: 0 -> 0.25, 1 -> 0.125, 2 -> 0.5, 3 -> 0.125 (ties broken either way)
    out = _warp(_logits_for([0.25, 0.125, 0.5, 0.125]), top_p=top_p)[0]
    if top_p == 0.8:  # the two 0.125 tokens tie; exactly one of them makes the cut
        assert _kept(out) in ({2, 0, 3}, {2, 0, 1})
    else:
        assert _kept(out) == kept


def test_top_p_applies_after_top_k():
    logits = _logits_for([0.4, 0.3, 0.2, 0.1])
    # Without top_k tokens 0 and 1 hold 0.7 < 0.75, so token 2 is needed; after top_k=3 renormalises
    # to 4/9, 3/9, 2/9 they hold 7/9 >= 0.75 and token 2 goes.
    assert _kept(_warp(logits, top_p=0.75)[0]) == {0, 1, 2}
    assert _kept(_warp(logits, top_p=0.75, top_k=3)[0]) == {0, 1}


def test_top_p_applies_after_temperature():
    logits = _logits_for([0.4, 0.3, 0.2, 0.1])
    assert _kept(_warp(logits, temperature=1.0, top_p=0.6)[0]) == {0, 1}
    assert _kept(_warp(logits, temperature=100.0, top_p=0.6)[0]) == {0, 1, 2}  # flatter: more tokens
    assert _kept(_warp(logits, temperature=0.1, top_p=0.6)[0]) == {0}  # sharper: fewer


def test_top_p_always_keeps_the_most_likely_token():
    assert _kept(_warp(_logits_for([0.97, 0.01, 0.01, 0.01]), top_p=1e-6)[0]) == {0}


@pytest.mark.parametrize("min_p,kept", [(0.0, {0, 1, 2, 3, 4}), (0.2, {0, 1, 2, 3}), (0.25, {0, 1, 2, 3}),
                                        (0.3, {0, 1, 2}), (0.9, {0}), (1.0, {0})])
def test_min_p_keeps_tokens_with_at_least_min_p_times_the_top_probability(min_p, kept):
    # relative to the top (0.4): 1, 0.75, 0.5, 0.25, 0.125
    assert _kept(_warp(_logits_for([0.4, 0.3, 0.2, 0.1, 0.05]), min_p=min_p)[0]) == kept


def test_min_p_applies_after_top_k_and_temperature():
    logits = _logits_for([0.4, 0.3, 0.2, 0.1, 0.05])
    assert _kept(_warp(logits, min_p=0.3, top_k=2)[0]) == {0, 1}
    assert _kept(_warp(logits, min_p=0.3, temperature=0.5)[0]) == {0, 1}  # (3/4)^2 > 0.3 > (1/2)^2


def test_typical_p_equals_transformers_typical_warper():
    transformers = pytest.importorskip("transformers")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 40, generator=g) * 2
    for mass in (0.2, 0.5, 0.9, 0.99):
        ours = _warp(logits, typical_p=mass)
        ref = transformers.TypicalLogitsWarper(mass=mass)(None, logits.clone())
        assert [_kept(r) for r in ours] == [_kept(r) for r in ref], mass
        assert all(0 < len(_kept(r)) < 40 for r in ours) or mass == 0.99


def test_rows_with_a_warper_off_are_untouched_in_a_mixed_batch():
    # One dominant token: float32 probabilities of the rest underflow the cumulative sum to 1.0.
    dominant = torch.full((1, 12), -30.0)
    dominant[0, 3] = 0.0
    logits = torch.cat([torch.tensor([[3.0, 2.0, 1.0, 0.0] + [-1.0] * 8]), dominant])
    on_off = [(dict(top_p=0.5), {}), (dict(min_p=0.5), {}), (dict(typical_p=0.5), {}), (dict(top_k=2), {})]
    for on, off in on_off:
        out = processors.warp(logits.clone(), [SamplingParams(**on), SamplingParams(**off)])
        assert len(_kept(out[0])) < 12, on  # the warper did act on its own row
        assert torch.equal(out[1], logits[1]), f"{on} changed a row that has it off"


# ---- choosing tokens ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(temperature=0.0), dict(temperature=2.0, top_k=1)])
def test_greedy_picks_argmax_per_row(kwargs):
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0], [9.0, 1.0, 3.0, 2.0]])
    p = SamplingParams(**kwargs)
    for _ in range(5):
        assert processors.sample(processors.warp(logits.clone(), [p, p]), [p, p], [None, None]).tolist() == [2, 0]


def test_mixed_greedy_and_sampled_rows():
    logits = torch.zeros(2, 50)
    logits[:, 7] = 0.5
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0)]
    gen = torch.Generator().manual_seed(0)
    drawn = [processors.sample(logits, params, [None, gen]).tolist() for _ in range(40)]
    assert all(a == 7 for a, _ in drawn)
    assert len({b for _, b in drawn}) > 10


def test_sampling_never_picks_a_removed_token():
    logits = torch.zeros(4, 50)
    logits[:, [7, 19, 42]] = 1.0
    p = SamplingParams(temperature=1.0, top_k=3, seed=0)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    warped = processors.warp(logits.clone(), [p] * 4)
    picked = {t for _ in range(50) for t in processors.sample(warped, [p] * 4, gens).tolist()}
    assert picked == {7, 19, 42}


def _draw(logits, seeds, steps=20):
    p = SamplingParams(temperature=1.0)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return torch.stack([processors.sample(logits, [p] * len(seeds), gens) for _ in range(steps)], dim=1)


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
    p = [SamplingParams(temperature=1.0)] * 2
    torch.manual_seed(3)
    a = processors.sample(logits, p, [None, None])
    torch.manual_seed(3)
    assert torch.equal(a, processors.sample(logits, p, [None, None]))


# ---- distributions: chi-square goodness of fit --------------------------------------------------

# Ten tokens, logits in no particular order and far from ties.
RAW = np.array([0.9, -1.5, 2.0, 0.1, 1.2, -0.8, 1.5, -0.3, -2.5, 0.5])
DRAWS = 6000


def _expected(logits: np.ndarray, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0) -> np.ndarray:
    """The distribution the parameters define, in the documented order, from the raw logits."""
    z = logits / temperature
    p = np.exp(z - z.max())
    p /= p.sum()

    def keep(mask):
        q = np.where(mask, p, 0.0)
        return q / q.sum()

    if top_k:
        p = keep(np.isin(np.arange(len(p)), np.argsort(-p)[:top_k]))
    if top_p < 1:
        order = np.argsort(-p)
        before = np.cumsum(p[order]) - p[order]  # mass of the tokens ranked above each one
        mask = np.zeros(len(p), bool)
        mask[order[before < top_p]] = True
        p = keep(mask)
    if min_p > 0:
        p = keep(p >= min_p * p.max())
    if typical_p < 1:
        nz = p > 0
        entropy = -(p[nz] * np.log(p[nz])).sum()
        distance = np.full(len(p), np.inf)
        distance[nz] = np.abs(-np.log(p[nz]) - entropy)
        order = np.argsort(distance)
        before = np.cumsum(p[order]) - p[order]
        mask = np.zeros(len(p), bool)
        mask[order[before < typical_p]] = True
        p = keep(mask & nz)
    return p


@pytest.mark.parametrize("kwargs", [
    dict(temperature=1.0),
    dict(temperature=0.6),
    dict(temperature=1.7),
    dict(top_k=4),
    dict(top_p=0.7),
    dict(min_p=0.12),
    dict(typical_p=0.6),
    dict(temperature=1.4, top_k=6, top_p=0.85, min_p=0.08),
    dict(temperature=0.8, top_k=7, typical_p=0.8),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sampling_follows_the_distribution_the_params_define(kwargs):
    from scipy.stats import chisquare

    expected = _expected(RAW, **kwargs)
    removed = expected == 0
    if set(kwargs) - {"temperature"}:
        assert removed.any() and (~removed).sum() >= 2, "the case should cut some tokens but not all"
    params = [SamplingParams(**kwargs)] * DRAWS
    logits = torch.tensor(RAW, dtype=torch.float32).expand(DRAWS, -1).clone()
    torch.manual_seed(0)
    tokens = processors.sample(processors.warp(logits, params), params, [None] * DRAWS)
    counts = np.bincount(tokens.numpy(), minlength=len(RAW))
    assert counts[removed].sum() == 0, f"removed tokens drawn: {counts} vs expected {expected}"
    kept = ~removed
    f_exp = expected[kept] / expected[kept].sum() * DRAWS
    assert chisquare(counts[kept], f_exp).pvalue > 0.001, (counts, f_exp.round(1))


def test_chi_square_check_rejects_a_wrong_distribution():
    # Guards the test above: drawing at temperature 1 is told apart from temperature 0.8 / top_p 0.9.
    from scipy.stats import chisquare

    params = [SamplingParams(temperature=1.0)] * DRAWS
    logits = torch.tensor(RAW, dtype=torch.float32).expand(DRAWS, -1).clone()
    torch.manual_seed(0)
    counts = np.bincount(processors.sample(processors.warp(logits, params), params, [None] * DRAWS).numpy(),
                         minlength=len(RAW))
    assert chisquare(counts, _expected(RAW, temperature=0.8) * DRAWS).pvalue < 0.001
    wrong = _expected(RAW, top_p=0.9)
    assert (counts[wrong == 0] > 0).any()
