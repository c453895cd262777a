"""Chunked prefill: a prompt longer than `prefill_chunk` is prefilled a chunk per step between
decode steps of the running sequences. Its tokens, log-probs and prompt log-probs equal a one-pass
prefill's and transformers'; short requests keep producing tokens while it prefills; an abort
takes effect between chunks and frees everything it held. Tiny random models as in test_engine.py."""

from __future__ import annotations

import pytest
import torch

from lmlab.engine.engine import Engine
from lmlab.engine.params import SamplingParams

from tests.engine.test_engine import CONFIGS, _char_tokenizer, _hf_logits, _prompt, _ref_greedy  # noqa: F401

LONG = _prompt(45, 7)
SHORT = _prompt(4, 8)


@pytest.fixture(scope="module")
def tok():
    return _char_tokenizer()


@pytest.mark.parametrize("name", ["llama", "mistral_window", "gpt2"])
def test_chunked_prefill_gives_the_one_pass_outputs_and_transformers_greedy(pair, tok, name):
    hf, model = pair(name)
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=3, prompt_logprobs=2)
    one = Engine(model, tok).complete(LONG, params)
    for chunk in (8, 13, 44):  # 44: one token in the last chunk
        res = Engine(model, tok, prefill_chunk=chunk).complete(LONG, params)
        c, o = res.outputs[0], one.outputs[0]
        assert c.token_ids == o.token_ids
        for got, ref in zip(c.logprobs, o.logprobs):
            assert set(got) == set(ref) and all(abs(got[t] - ref[t]) < 1e-4 for t in ref)
        assert len(res.prompt_logprobs) == len(LONG) and res.prompt_logprobs[0] is None
        for got, ref in zip(res.prompt_logprobs[1:], one.prompt_logprobs[1:]):
            assert set(got) == set(ref) and all(abs(got[t] - ref[t]) < 1e-4 for t in ref)
    assert one.outputs[0].token_ids == _ref_greedy(hf, LONG, 8)
    ref = _hf_logits(hf, LONG).log_softmax(-1)
    for i in range(1, len(LONG)):
        assert abs(res.prompt_logprobs[i][LONG[i]] - ref[i - 1, LONG[i]].item()) < 1e-4


def test_samples_of_a_chunked_prompt_equal_the_one_pass_samples(pair, tok):
    model = pair("llama")[1]
    params = SamplingParams(temperature=1.0, n=3, seed=5, max_tokens=6)
    one = Engine(model, tok).complete(LONG, params)
    chunked = Engine(model, tok, prefill_chunk=10).complete(LONG, params)
    assert [o.token_ids for o in chunked.outputs] == [o.token_ids for o in one.outputs]


def test_running_requests_decode_between_the_chunks_of_a_long_prompt(pair, tok):
    model = pair("llama")[1]
    engine = Engine(model, tok, prefill_chunk=8)
    tokens = []
    short = engine.add_request(SHORT, SamplingParams(temperature=0.0, max_tokens=12),
                               on_delta=lambda d: tokens.append(d.token_id))
    engine.step()  # the short one runs: prefill + one decode
    long = engine.add_request(LONG, SamplingParams(temperature=0.0, max_tokens=4))
    later = engine.add_request(SHORT[:2], SamplingParams(temperature=0.0, max_tokens=2))
    done, seen = {}, []
    for _ in range(5):  # 45 tokens in chunks of 8: six steps
        before = len(tokens)
        done.update({o.request_id: o for o in engine.step()})
        assert len(tokens) == before + 1  # the short request got its token this step
        assert engine.prefilling is not None and engine.prefilling.request.id == long
        # the later short one does not wait for the long prompt: it ran and finished beside it
        assert short in [s.request.id for s in engine.running] and not engine.waiting
        seen.append(engine.prefilling.done)
    assert seen == [8, 16, 24, 32, 40] and later in done
    while engine.has_unfinished():
        done.update({o.request_id: o for o in engine.step()})
    alone = Engine(model, tok)
    for rid, prompt, n in ((short, SHORT, 12), (long, LONG, 4), (later, SHORT[:2], 2)):
        ref = alone.complete(prompt, SamplingParams(temperature=0.0, max_tokens=n)).outputs[0]
        assert done[rid].outputs[0].token_ids == ref.token_ids


def test_abort_during_chunked_prefill_stops_it_between_chunks_and_frees_its_slot(pair, tok):
    model = pair("llama")[1]
    engine = Engine(model, tok, prefill_chunk=8, max_batch=2)
    long = engine.add_request(LONG, SamplingParams(temperature=0.0, max_tokens=4, n=2))
    engine.step()
    engine.step()
    assert engine.prefilling.done == 16
    engine.abort(long)
    out = {o.request_id: o for o in engine.step()}
    assert out[long].outputs[0].finish_reason == "abort" and out[long].outputs[0].token_ids == []
    assert engine.prefilling is None and engine.running == [] and not engine.has_unfinished()
    # both slots are free again: a request with n=2 runs and gives its alone tokens
    params = SamplingParams(temperature=0.0, max_tokens=3, n=2)
    res = engine.complete(SHORT, params)
    assert [o.token_ids for o in res.outputs] == [o.token_ids for o in Engine(model, tok).complete(SHORT, params).outputs]
