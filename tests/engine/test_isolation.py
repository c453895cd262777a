"""One request's sampling values never fail another: values the float32 chain cannot carry are
refused up front, and whatever still goes wrong in one row of a step (NaN, nothing left to sample,
a processor raising) fails that request alone while the others produce exactly what they produce
alone. Tiny random Llama with a character-level tokenizer, as in test_engine.py."""

from __future__ import annotations

import pytest
import torch

from lmlab.engine import processors
from lmlab.engine.engine import Engine
from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError

from tests.engine.test_engine import CONFIGS, _char_tokenizer  # noqa: F401 - the module's models

PROMPTS = [[5, 7, 9, 11], [3, 4], [20, 21, 22, 23, 24, 25]]


@pytest.fixture(scope="module")
def tok():
    return _char_tokenizer()


@pytest.fixture(scope="module")
def model(pair):
    return pair("llama")[1]


@pytest.mark.parametrize("values", [dict(temperature=1e-45), dict(temperature=1e-300), dict(temperature=1e-3),
                                    dict(repetition_penalty=1e-300), dict(repetition_penalty=1e30),
                                    dict(logit_bias={3: 1e39})])
def test_values_float32_cannot_carry_are_refused(values):
    with pytest.raises(LmlabError, match=next(iter(values))):
        SamplingParams(**values)


@pytest.mark.parametrize("top_p", [1e-45, 1e-300, 1e-8])
def test_a_tiny_top_p_keeps_the_most_likely_token(model, tok, top_p):
    out = Engine(model, tok).complete(PROMPTS[0], SamplingParams(temperature=1.0, top_p=top_p, seed=0, max_tokens=6))
    greedy = Engine(model, tok).complete(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=6))
    assert out.error is None and out.outputs[0].token_ids == greedy.outputs[0].token_ids


def _others_alone(model, tok, params):
    return [Engine(model, tok).complete(p, sp).outputs[0].token_ids for p, sp in zip(PROMPTS, params)]


def _hostile(kind: str) -> SamplingParams:
    """A request whose values passed validation but break its row (a stand-in for any bug)."""
    p = SamplingParams(temperature=0.8, seed=3, max_tokens=8)
    if kind == "nan":
        p.temperature = 1e-45  # logits / 1e-45 = inf: softmax gives NaN
    elif kind == "all_masked":
        p.logit_bias = {t: float("-inf") for t in range(97)}  # nothing left to sample
    return p


@pytest.mark.parametrize("kind", ["nan", "all_masked"])
def test_a_row_that_cannot_be_sampled_fails_only_its_request(model, tok, kind):
    params = [SamplingParams(temperature=0.0, max_tokens=8), _hostile(kind),
              SamplingParams(temperature=0.9, top_p=0.9, seed=1, max_tokens=8)]
    engine = Engine(model, tok)
    outs = engine.generate(PROMPTS, params)
    assert outs[1].error and outs[1].outputs[0].finish_reason == "error"
    alone = _others_alone(model, tok, params)
    assert [outs[0].outputs[0].token_ids, outs[2].outputs[0].token_ids] == [alone[0], alone[2]]
    assert all(o.error is None for o in (outs[0], outs[2]))
    # the engine goes on serving after the failure
    assert engine.complete(PROMPTS[0], params[0]).outputs[0].token_ids == alone[0]


def test_a_processor_that_raises_for_one_row_fails_only_that_request(model, tok, monkeypatch):
    real = processors.bias

    def bias(logits, params):  # a bug that only one request's values reach
        if any(p.logit_bias.get(13) == 99.0 for p in params):
            raise RuntimeError("boom")
        return real(logits, params)

    monkeypatch.setattr(processors, "bias", bias)
    params = [SamplingParams(temperature=0.7, seed=5, max_tokens=6, logit_bias={2: 1.0}),
              SamplingParams(temperature=0.7, seed=6, max_tokens=6, logit_bias={13: 99.0}, n=2),
              SamplingParams(temperature=0.0, max_tokens=6, repetition_penalty=1.3)]
    outs = Engine(model, tok).generate(PROMPTS, params)
    assert "boom" in outs[1].error and {c.finish_reason for c in outs[1].outputs} == {"error"}
    alone = _others_alone(model, tok, params)
    assert [outs[0].outputs[0].token_ids, outs[2].outputs[0].token_ids] == [alone[0], alone[2]]


def test_streaming_reports_the_failure_to_the_failed_request_only(model, tok):
    deltas: dict[str, list] = {}
    engine = Engine(model, tok)
    good = engine.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=5),
                              on_delta=lambda d: deltas.setdefault(d.request_id, []).append(d))
    bad = engine.add_request(PROMPTS[1], _hostile("nan"),
                             on_delta=lambda d: deltas.setdefault(d.request_id, []).append(d))
    while engine.has_unfinished():
        engine.step()
    assert deltas[bad][-1].finish_reason == "error"
    assert deltas[good][-1].finish_reason == "length" and len(deltas[good]) == 5
