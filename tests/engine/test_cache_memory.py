"""KV-cache memory follows the running work: a big request's slots are given back once it ends,
and a `max_cache_tokens` ceiling holds at every step while every request still completes with
the tokens an unconstrained engine gives; a request that can never fit is refused alone. Tiny
random Llama with a character-level tokenizer, as in test_engine.py."""

from __future__ import annotations

import pytest

from lmlab.engine.engine import Engine
from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError

from tests.engine.test_engine import CONFIGS, _char_tokenizer, _prompt  # noqa: F401 - the module's models


@pytest.fixture(scope="module")
def tok():
    return _char_tokenizer()


@pytest.fixture(scope="module")
def model(pair):
    return pair("llama")[1]


def _steps(engine: Engine, each=lambda: None) -> dict:
    done = {}
    while engine.has_unfinished():
        done.update({o.request_id: o for o in engine.step()})
        each()
    return done


def test_a_big_n16_request_gives_its_cache_back_when_it_ends(model, tok):
    engine = Engine(model, tok)
    idle = engine.cache_bytes
    short = engine.add_request(_prompt(3, 1), SamplingParams(temperature=0.0, max_tokens=40))
    big = engine.add_request(_prompt(20, 2), SamplingParams(temperature=1.0, n=16, seed=3, max_tokens=6))
    done = {}
    while big not in done:
        done.update({o.request_id: o for o in engine.step()})
        assert big in done or engine.cache.capacity[0] >= 17
    # The short request still runs: the cache shrinks to what it needs, its tokens unchanged.
    engine.step()
    assert engine.cache.capacity[0] == 1 and engine.cache_bytes <= 2 * idle
    done.update(_steps(engine))
    assert engine.cache_bytes <= idle  # empty: back to (within) the idle size
    ref = Engine(model, tok).complete(_prompt(3, 1), SamplingParams(temperature=0.0, max_tokens=40))
    assert done[short].outputs[0].token_ids == ref.outputs[0].token_ids
    assert len(done[big].outputs) == 16


@pytest.mark.parametrize("chunk", [512, 8])  # 8: long prompts also hold a chunked-prefill cache
def test_admission_keeps_the_cache_under_the_ceiling_with_the_unconstrained_outputs(model, tok, chunk):
    reqs = [(_prompt(n, 10 + i), SamplingParams(temperature=0.0 if i % 2 else 0.8, seed=i, n=1 + i % 3,
                                                 max_tokens=6 + i))
            for i, n in enumerate([30, 5, 12, 40, 3, 20, 9, 25])]
    free = Engine(model, tok, prefill_chunk=chunk)
    ref = free.generate([p for p, _ in reqs], [sp for _, sp in reqs])
    ceiling = 160
    engine = Engine(model, tok, prefill_chunk=chunk, max_cache_tokens=ceiling)
    per_token = engine.cache_bytes // (engine.cache.capacity[0] * engine.cache.capacity[1])
    ids = [engine.add_request(p, sp) for p, sp in reqs]
    most = []

    def check():
        most.append(len(engine.running))
        assert engine.cache_bytes <= ceiling * per_token, (engine.cache.capacity, [(len(s.request.prompt), s.params.max_tokens) for s in engine.running])
        assert len(engine.running) <= 6

    # admission waits: the ceiling is far below what the eight requests need at once
    assert sum(sp.samples * (len(p) + sp.max_tokens) for p, sp in reqs) > 2 * ceiling
    done = _steps(engine, check)
    assert max(most) >= 2  # some requests did run together
    for rid, r in zip(ids, ref):
        assert [o.token_ids for o in done[rid].outputs] == [o.token_ids for o in r.outputs]
        assert done[rid].error is None


def test_a_request_that_can_never_fit_the_ceiling_is_refused_alone(model, tok):
    engine = Engine(model, tok, max_cache_tokens=100)
    ok = engine.add_request(_prompt(5, 1), SamplingParams(temperature=0.0, max_tokens=5))
    with pytest.raises(LmlabError, match="max_cache_tokens = 100"):
        engine.add_request(_prompt(20, 2), SamplingParams(temperature=0.0, n=4, max_tokens=20))
    assert _steps(engine)[ok].outputs[0].token_ids
