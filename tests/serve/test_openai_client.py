"""The official openai client against a real `lmlab serve` process."""

from __future__ import annotations

import math

import httpx
import pytest

openai = pytest.importorskip("openai")

MSG = [{"role": "user", "content": "What is the capital of France?"}]


def test_models(client):
    assert [m.id for m in client.models.list().data] == ["smollm2"]


def test_chat_and_streaming_chat_agree(client):
    r = client.chat.completions.create(model="smollm2", messages=MSG, temperature=0, max_tokens=12)
    text = r.choices[0].message.content
    assert text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 5
    stream = client.chat.completions.create(model="smollm2", messages=MSG, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True})
    pieces, reasons, usage = [], [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            reasons.append(c.finish_reason)
    assert "".join(pieces) == text
    assert reasons[-1] == r.choices[0].finish_reason
    assert usage.completion_tokens == r.usage.completion_tokens


def test_chat_sampling_params_logprobs_and_n(client):
    r = client.chat.completions.create(
        model="smollm2", messages=[{"role": "system", "content": "Be brief."}] + MSG, max_completion_tokens=6,
        temperature=0.8, top_p=0.9, seed=3, n=2, presence_penalty=0.5, frequency_penalty=0.5,
        logit_bias={"28": -5}, stop=["\n\n"], logprobs=True, top_logprobs=3,
        extra_body={"top_k": 20, "min_p": 0.01, "repetition_penalty": 1.1})
    assert len(r.choices) == 2
    for c in r.choices:
        for entry in c.logprobs.content:
            assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
            assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    again = client.chat.completions.create(
        model="smollm2", messages=[{"role": "system", "content": "Be brief."}] + MSG, max_completion_tokens=6,
        temperature=0.8, top_p=0.9, seed=3, n=2, presence_penalty=0.5, frequency_penalty=0.5,
        logit_bias={"28": -5}, stop=["\n\n"], extra_body={"top_k": 20, "min_p": 0.01, "repetition_penalty": 1.1})
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_completions_echo_logprobs_match_the_model(client, server, bundled_lm):
    prompt = "The quick brown fox jumps over the lazy"
    ids = bundled_lm.tokenizer.encode(prompt)
    r = client.completions.create(model="smollm2", prompt=prompt, max_tokens=3, temperature=0, echo=True,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    n_gen = r.usage.completion_tokens
    assert len(lp.tokens) == len(ids) + n_gen == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert r.choices[0].text.startswith(prompt)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    import torch
    with torch.no_grad():
        ref = bundled_lm.model(torch.tensor([ids]))[0].log_softmax(-1)
    for i in range(1, len(ids)):
        assert math.isclose(lp.token_logprobs[i], float(ref[i - 1, ids[i]]), abs_tol=1e-3)
        assert len(lp.top_logprobs[i]) >= 2
    # scoring only (lm-eval's loglikelihood): max_tokens 0 with echo, token ids in, batch of prompts
    s = client.completions.create(model="smollm2", prompt=[ids, ids[:4]], max_tokens=0, echo=True, logprobs=0)
    assert [len(c.logprobs.token_logprobs) for c in s.choices] == [len(ids), 4]
    assert s.choices[0].logprobs.token_logprobs[1:] == pytest.approx(lp.token_logprobs[1:len(ids)], abs=1e-4)
    assert s.usage.completion_tokens == 0


def test_completions_prompt_forms_and_stream(client):
    r = client.completions.create(model="smollm2", prompt=["Once upon a time", "In a galaxy"], max_tokens=4,
                                  temperature=0)
    assert [c.index for c in r.choices] == [0, 1] and all(c.text for c in r.choices)
    pieces = [c.choices[0].text for c in client.completions.create(
        model="smollm2", prompt="Once upon a time", max_tokens=4, temperature=0, stream=True)]
    assert "".join(pieces) == r.choices[0].text


def test_embeddings(client):
    r = client.embeddings.create(model="smollm2", input=["a cat sat on the mat", "quantum chromodynamics"])
    a, b = (d.embedding for d in r.data)
    assert len(a) == len(b) == 576 and a != b
    assert all(math.isfinite(x) for x in a)
    one = client.embeddings.create(model="smollm2", input="a cat sat on the mat").data[0].embedding
    assert one == pytest.approx(a, abs=1e-5)


def test_tokenizer_probes_health_metrics(server):
    info = httpx.get(server.url + "/tokenizer_info").json()
    assert info["eos_token"] and info["max_model_len"] == 8192
    ids = httpx.post(server.url + "/tokenize", json={"prompt": "Hello world"}).json()["tokens"]
    assert httpx.post(server.url + "/detokenize", json={"tokens": ids}).json()["prompt"] == "Hello world"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    m = httpx.get(server.url + "/metrics").text
    assert "lmlab_requests_total" in m and "lmlab_queue_depth" in m and "lmlab_time_to_first_token_seconds" in m
