"""`lmlab serve --engine vllm`: the clear error without vLLM, and our side of the adapter.

vLLM (GPU-only, large) is not installed here. The adapter's own code, the SamplingParams
mapping, the folding of vLLM's delta outputs into lmlab's, and the app served through the vLLM
runner, is tested against a minimal stand-in for the `vllm` module that only records what it is
given and plays back outputs shaped like vLLM's (RequestOutput / CompletionOutput / Logprob).
"""

from __future__ import annotations

import enum
import json
import importlib.util
import subprocess
import sys
import types
from types import SimpleNamespace as NS

import pytest

from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_engine_vllm_without_vllm_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "lmlab.cli.main", "serve", "--engine", "vllm", "--port", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install vllm" in lines[0] and "CUDA" in lines[0], r.stderr


# ---- a stand-in for the vllm module ---------------------------------------------------------------

class FakeEngine:
    """Plays back `script` (a list of vLLM-shaped RequestOutputs) for every request."""

    def __init__(self, script):
        self.script, self.calls, self.errored, self.shut_down = script, [], False, False

    async def generate(self, prompt, sampling_params, request_id):
        self.calls.append((prompt, sampling_params, request_id))
        for out in self.script:
            yield out

    def shutdown(self):
        self.shut_down = True


@pytest.fixture
def fake_vllm(monkeypatch):
    class Recorded:  # vllm.SamplingParams / AsyncEngineArgs: keep the keywords
        def __init__(self, **kw):
            self.kw = kw

    vllm = types.ModuleType("vllm")
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = enum.Enum("RequestOutputKind", "CUMULATIVE DELTA FINAL_ONLY")
    vllm.sampling_params = sampling
    vllm.SamplingParams = type("SamplingParams", (Recorded,), {})
    vllm.AsyncEngineArgs = type("AsyncEngineArgs", (Recorded,), {})
    vllm.engines = []

    def from_engine_args(args):
        vllm.engine_args = args.kw
        vllm.engines.append(FakeEngine(vllm.script))
        return vllm.engines[-1]

    vllm.AsyncLLMEngine = NS(from_engine_args=from_engine_args)
    vllm.script = []
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return vllm


def lp(**by_id):  # vLLM's {token id: Logprob}
    return {int(k[1:]): NS(logprob=v, rank=1, decoded_token=None) for k, v in by_id.items()}


def out(*completions, prompt_logprobs=None, finished=False):
    return NS(outputs=list(completions), prompt_logprobs=prompt_logprobs, finished=finished)


def comp(index, text, ids, logprobs=None, cum=None, finish=None, stop=None):
    return NS(index=index, text=text, token_ids=ids, logprobs=logprobs, cumulative_logprob=cum,
              finish_reason=finish, stop_reason=stop)


# ---- the mapping ----------------------------------------------------------------------------------

def test_sampling_params_map_to_vllms(fake_vllm):
    from lmlab.serve.vllm_runner import vllm_sampling_params

    p = SamplingParams(max_tokens=20, min_tokens=2, temperature=0.7, top_p=0.9, min_p=0.05,
                       repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=-0.2,
                       logit_bias={5: -2}, stop="\n\n", stop_token_ids=[7], include_stop_str_in_output=True,
                       ignore_eos=True, seed=3, n=2, logprobs=4, prompt_logprobs=1)
    assert vllm_sampling_params(p, fake_vllm).kw == dict(
        n=2, max_tokens=20, min_tokens=2, temperature=0.7, top_p=0.9, top_k=-1, min_p=0.05,
        repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=-0.2, logit_bias={5: -2.0},
        stop=["\n\n"], stop_token_ids=[7], include_stop_str_in_output=True, ignore_eos=True, seed=3,
        logprobs=4, prompt_logprobs=1, output_kind=fake_vllm.sampling_params.RequestOutputKind.DELTA)


def test_greedy_and_top_k_map_through(fake_vllm):
    from lmlab.serve.vllm_runner import vllm_sampling_params

    kw = vllm_sampling_params(SamplingParams(temperature=0, top_k=40), fake_vllm).kw
    assert (kw["temperature"], kw["top_k"], kw["logit_bias"], kw["seed"], kw["logprobs"]) == (0, 40, None, None, None)


@pytest.mark.parametrize("params,word", [(SamplingParams(n=1, best_of=3), "best_of"),
                                         (SamplingParams(typical_p=0.5), "typical_p")])
def test_what_vllm_lacks_is_refused_not_dropped(fake_vllm, params, word):
    from lmlab.serve.vllm_runner import vllm_sampling_params

    with pytest.raises(LmlabError, match=word):
        vllm_sampling_params(params, fake_vllm)


def test_collector_streams_one_delta_per_token_and_builds_the_output():
    from lmlab.serve.vllm_runner import OutputCollector

    c = OutputCollector("r0", [1, 2, 3], SamplingParams(n=2, logprobs=1, prompt_logprobs=0))
    first = c.push(out(comp(0, "Hel", [10], [lp(t10=-0.1)], cum=-0.1), comp(1, "Bye", [20], [lp(t20=-0.5)], cum=-0.5),
                       prompt_logprobs=[None, lp(t2=-1.0), lp(t3=-2.0, t9=-0.5)]))
    # two tokens in one delta (vLLM merges outputs not yet read), the last one finishing
    rest = c.push(out(comp(0, "lo!", [11, 12], [lp(t11=-0.2), lp(t12=-0.3, t13=-0.2)], cum=-0.6, finish="stop",
                           stop="!"), finished=False))
    last = c.push(out(comp(1, "", [], [], cum=-0.5, finish="length"), finished=True))
    assert [(d.index, d.token_id, d.text, d.finish_reason) for d in first + rest + last] == [
        (0, 10, "Hel", None), (1, 20, "Bye", None), (0, 11, "", None), (0, 12, "lo!", "stop"), (1, None, "", "length")]
    assert rest[1].logprobs == {12: -0.3, 13: -0.2}
    r = c.result()
    assert r.finished and r.request_id == "r0" and r.prompt_token_ids == [1, 2, 3]
    assert r.prompt_logprobs == [None, {2: -1.0}, {3: -2.0, 9: -0.5}]
    a, b = r.outputs
    assert (a.text, a.token_ids, a.finish_reason, a.stop_reason, a.cumulative_logprob) == ("Hello!", [10, 11, 12],
                                                                                           "stop", "!", -0.6)
    assert a.logprobs == [{10: -0.1}, {11: -0.2}, {12: -0.3, 13: -0.2}]
    assert (b.text, b.token_ids, b.finish_reason) == ("Bye", [20], "length")


# ---- the app through the vLLM runner ---------------------------------------------------------------

@pytest.fixture
def vllm_app(fake_vllm, bundled_folder):
    from fastapi.testclient import TestClient

    from lmlab.serve.app import ServeConfig, create_app
    from lmlab.serve.vllm_runner import VllmRunner

    fake_vllm.script = [out(comp(0, "Hello", [9906])), out(comp(0, " there", [2045], finish="stop"), finished=True)]
    runner = VllmRunner(bundled_folder, "bf16", max_batch=4)
    with TestClient(create_app(runner, ServeConfig(max_concurrency=4)), base_url="http://127.0.0.1") as client:
        yield client, runner, fake_vllm
    assert fake_vllm.engines[0].shut_down  # the app's shutdown stops vLLM's engine


def test_chat_goes_through_vllm_with_our_prompt_ids(vllm_app):
    client, runner, vllm = vllm_app
    messages = [{"role": "user", "content": "Hi"}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0.5, "max_tokens": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 2
    prompt, sp, _ = vllm.engines[0].calls[0]
    assert prompt == {"prompt_token_ids": runner.tokenizer.encode_chat(messages)}
    assert (sp.kw["temperature"], sp.kw["max_tokens"]) == (0.5, 7)
    assert vllm.engine_args == {"model": str(runner.folder), "dtype": "bfloat16", "max_num_seqs": 4}


def test_streaming_chat_through_vllm(vllm_app):
    client, _, _ = vllm_app
    with client.stream("POST", "/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "Hi"}], "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    text = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content", "") for ln in lines[:-1])
    assert text == "Hello there"


def test_unsupported_request_and_embeddings_get_openai_errors(vllm_app):
    client, _, _ = vllm_app
    r = client.post("/v1/completions", json={"prompt": "Hi", "best_of": 3})
    assert r.status_code == 400 and "best_of" in r.json()["error"]["message"]
    r = client.post("/v1/embeddings", json={"input": "Hi"})
    assert r.status_code == 501 and r.json()["error"]["code"] == "unsupported"
    assert client.get("/health").status_code == 200
