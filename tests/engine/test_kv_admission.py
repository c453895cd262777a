"""Admission beside a long prompt: short requests start while one long prompt is prefilled
chunk by chunk (so it does not hold back their first token); the long prompt then decodes in a
cache of its own, so the short requests' slots stay short; its batch place and cache count
against `max_batch` and `max_cache_tokens`; and every request still gets the tokens it gets alone. Tiny random Llama with a character-level tokenizer, as in test_engine.py."""

from __future__ import annotations

import pytest

from lmlab.engine.engine import Engine
from lmlab.engine.params import SamplingParams

from tests.engine.test_engine import CONFIGS, _char_tokenizer, _prompt  # noqa: F401 - the module's models

LONG = _prompt(45, 7)
SHORT = _prompt(4, 8)
GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def tok():
    return _char_tokenizer()


@pytest.fixture(scope="module")
def model(pair):
    return pair("llama")[1]


def _alone(model, tok, prompt, max_tokens):
    return Engine(model, tok).complete(prompt, SamplingParams(**GREEDY, max_tokens=max_tokens)).outputs[0].token_ids


def test_a_short_request_gets_its_first_token_while_a_long_prompt_is_prefilled(model, tok):
    engine = Engine(model, tok, prefill_chunk=8)
    long = engine.add_request(LONG, SamplingParams(**GREEDY, max_tokens=3))
    engine.step()
    assert engine.prefilling is not None and engine.prefilling.done == 8
    tokens = []
    short = engine.add_request(SHORT, SamplingParams(**GREEDY, max_tokens=3), on_delta=lambda d: tokens.append(d))
    done = {o.request_id: o for o in engine.step()}
    assert tokens and engine.prefilling is not None and engine.prefilling.done == 16  # 45 tokens: 4 chunks to go
    while engine.has_unfinished():
        done.update({o.request_id: o for o in engine.step()})
    assert done[short].outputs[0].token_ids == _alone(model, tok, SHORT, 3)
    assert done[long].outputs[0].token_ids == _alone(model, tok, LONG, 3)


def test_the_long_prompts_batch_slot_stays_reserved_while_it_is_prefilled(model, tok):
    engine = Engine(model, tok, prefill_chunk=8, max_batch=2)
    first = engine.add_request(SHORT, SamplingParams(**GREEDY, max_tokens=30))
    engine.step()
    long = engine.add_request(LONG, SamplingParams(**GREEDY, max_tokens=4))
    later = engine.add_request(SHORT[:2], SamplingParams(**GREEDY, max_tokens=2))
    done = {}
    for _ in range(4):
        done.update({o.request_id: o for o in engine.step()})
        # `first` + the long prompt fill the batch of 2: the later short one waits
        assert [s.request.id for s in engine.running] == [first] and engine.waiting[0].id == later
    while engine.has_unfinished():
        done.update({o.request_id: o for o in engine.step()})
    for rid, prompt, n in ((first, SHORT, 30), (long, LONG, 4), (later, SHORT[:2], 2)):
        assert done[rid].outputs[0].token_ids == _alone(model, tok, prompt, n)


def test_a_long_prompt_decodes_in_its_own_cache_and_the_ceiling_counts_it(model, tok):
    # the long prompt: 45 + 4 positions of its own; a short one: a slot of 4 + 30.
    # 49 + 34 leaves room for one short request beside it, not two (49 + 2 x 34)
    ceiling = 100
    engine = Engine(model, tok, prefill_chunk=8, max_cache_tokens=ceiling)
    per_token = engine.cache_bytes // (engine.cache.capacity[0] * engine.cache.capacity[1])
    long = engine.add_request(LONG, SamplingParams(**GREEDY, max_tokens=4))
    engine.step()
    a = engine.add_request(SHORT, SamplingParams(**GREEDY, max_tokens=30))
    b = engine.add_request(SHORT[:3], SamplingParams(**GREEDY, max_tokens=30))
    done, together = {}, []
    while engine.has_unfinished():
        done.update({o.request_id: o for o in engine.step()})
        assert engine.cache_bytes <= ceiling * per_token
        # the short requests' slots never take the long prompt's length
        assert engine.cache.capacity[1] < len(LONG)
        busy = engine.prefilling is not None or bool(engine.lanes)
        together.append((busy, {s.request.id for s in engine.running}))
    assert (True, {a}) in together  # `a` ran beside the long prompt ...
    assert not any(busy and b in ids for busy, ids in together)  # ... `b` only after it
    for rid, prompt, n in ((long, LONG, 4), (a, SHORT, 30), (b, SHORT[:3], 30)):
        assert done[rid].outputs[0].token_ids == _alone(model, tok, prompt, n)
