"""Endpoint backend against a tiny local fake OpenAI server: concurrency, retries, a down
endpoint's message, the cache that keeps finished answers; the local backend on a real model."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lmlab.errors import LmlabError
from lmlab.judge.backends import EndpointBackend, LocalBackend, backend_from


class FakeOpenAI:
    """Answers chat completions with the last user message reversed; `fail_first` requests
    first get a 503; a message containing "BOOM" always gets a 500."""

    def __init__(self, fail_first: int = 0):
        self.requests, self.fail_first = [], fail_first
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    fail = fake.fail_first > 0
                    fake.fail_first -= fail
                text = body["messages"][-1]["content"]
                if fail or "BOOM" in text:
                    self.send_response(503 if fail else 500)
                    self.end_headers()
                    self.wfile.write(b"overloaded")
                    return
                msg = {"role": "assistant", "content": text[::-1]}
                choice = {"index": 0, "message": msg, "finish_reason": "stop"}
                if body.get("logprobs"):
                    top = [{"token": "7", "logprob": math.log(0.6)}, {"token": " 8", "logprob": math.log(0.3)},
                           {"token": "x", "logprob": math.log(0.1)}]
                    choice["logprobs"] = {"content": [{"token": "7", "logprob": top[0]["logprob"],
                                                       "top_logprobs": top}]}
                out = json.dumps({"choices": [choice]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakeOpenAI()
    yield f
    f.close()


def convs(*texts):
    return [[{"role": "user", "content": t}] for t in texts]


def test_endpoint_answers_in_order_with_key_and_cache(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    b = EndpointBackend(fake.url, "judge-x", api_key_env="MY_KEY", cache=tmp_path / "c.sqlite", concurrency=4)
    texts = [f"item {i}" for i in range(12)]
    assert b.complete(convs(*texts)) == [t[::-1] for t in texts]
    assert len(fake.requests) == 12 and fake.requests[0]["auth"] == "Bearer sk-test"
    assert fake.requests[0]["body"]["model"] == "judge-x"
    again = EndpointBackend(fake.url, "judge-x", api_key_env="MY_KEY", cache=tmp_path / "c.sqlite")
    assert again.complete(convs(*texts)) == [t[::-1] for t in texts]
    assert len(fake.requests) == 12 and again.calls == 0  # the re-run paid nothing


def test_endpoint_retries_transient_errors(tmp_path):
    f = FakeOpenAI(fail_first=2)
    try:
        b = EndpointBackend(f.url, "m", cache=None, retries=3, backoff=0.01, concurrency=1)
        assert b.complete(convs("abc")) == ["cba"]
        assert len(f.requests) == 3
    finally:
        f.close()


def test_failed_requests_raise_after_retries_and_finished_ones_stay_cached(fake, tmp_path):
    b = EndpointBackend(fake.url, "m", cache=tmp_path / "c.sqlite", retries=2, backoff=0.01)
    with pytest.raises(LmlabError, match=r"failed after 2 tries: HTTP 500.*1 of 3 requests failed"):
        b.complete(convs("one", "BOOM", "two"))
    assert len(b.cache) == 2
    n = len(fake.requests)
    with pytest.raises(LmlabError):
        b.complete(convs("one", "BOOM", "two"))
    assert len(fake.requests) - n == 2  # only the failed one was asked again (twice)


def test_down_endpoint_gives_a_clear_message(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    b = EndpointBackend(f"http://127.0.0.1:{port}", "m", cache=None, retries=2, backoff=0.01)
    with pytest.raises(LmlabError, match=rf"127.0.0.1:{port}/v1/chat/completions failed after 2 tries: ConnectError"):
        b.complete(convs("hi"))


def test_endpoint_top_logprobs_and_options(fake):
    b = EndpointBackend(fake.url, "m", cache=None)
    top = b.top_logprobs(convs("q"), k=3)[0]
    assert top["7"] == pytest.approx(math.log(0.6))
    assert fake.requests[-1]["body"]["top_logprobs"] == 3 and fake.requests[-1]["body"]["max_tokens"] == 1
    opts = b.option_logprobs(convs("q"), ["7", "8", "9"])[0]
    assert opts["7"] == pytest.approx(math.log(0.6)) and opts["8"] == pytest.approx(math.log(0.3))
    assert opts["9"] == -math.inf


def test_backend_from_needs_a_model_name_for_a_url():
    with pytest.raises(LmlabError, match="--judge-model NAME"):
        backend_from(None, url="http://127.0.0.1:1")


def test_local_backend_batches_and_scores_options_exactly(bundled_lm, tmp_path):
    import torch

    b = LocalBackend(bundled_lm, cache=tmp_path / "c.sqlite", progress=False)
    conv = convs("Rate the number seven on a scale of 1 to 10. Answer with a number only.")
    one = b.complete(conv, max_tokens=8)
    both = LocalBackend(bundled_lm, cache=None, progress=False).complete(conv * 3, max_tokens=8)
    assert both == one * 3  # batched greedy decoding gives the one-at-a-time text
    lps = b.option_logprobs(conv, ["7", "10"])[0]  # "7" is no prefix of "10": both are whole-string log-probs
    ids = bundled_lm.prompt_ids(conv[0])
    with torch.no_grad():
        logits = bundled_lm.model(torch.tensor([ids + bundled_lm.tokenizer.encode("10", add_special_tokens=False)]))
    lp = torch.log_softmax(logits[0].float(), -1)
    seven = bundled_lm.tokenizer.encode("7", add_special_tokens=False)
    assert len(seven) == 1 and lps["7"] == pytest.approx(lp[len(ids) - 1, seven[0]].item(), abs=1e-3)
    ten = bundled_lm.tokenizer.encode("10", add_special_tokens=False)
    expect = sum(lp[len(ids) - 1 + i, t].item() for i, t in enumerate(ten))
    assert lps["10"] == pytest.approx(expect, abs=1e-3)


def test_constrained_verdicts_reach_the_endpoint_only_when_it_takes_them(fake):
    choice = ["[[A]]", "[[B]]", "[[C]]"]
    EndpointBackend(fake.url, "m", cache=None, guided=True).complete(convs("q"), choice=choice)
    assert fake.requests[-1]["body"]["guided_choice"] == choice
    EndpointBackend(fake.url, "m", cache=None).complete(convs("q"), choice=choice)
    assert "guided_choice" not in fake.requests[-1]["body"]
