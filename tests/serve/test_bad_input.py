"""Bad input gets the right status and an OpenAI-style error body; the server keeps serving."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import start_server

openai = pytest.importorskip("openai")

CHAT = "/v1/chat/completions"
OK_CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


BAD = [
    ("post", CHAT, b"{not json", 400),
    ("post", CHAT, b"[1, 2]", 400),
    ("post", CHAT, json.dumps({"messages": "hello"}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "max_tokens": "many"}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "max_tokens": -1}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "temperature": -3}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "top_p": 7}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "logit_bias": {"999999": 3}}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "messages": []}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "model": "gpt-17"}).encode(), 404),
    ("post", "/v1/completions", json.dumps({"prompt": [[5, 999999]], "max_tokens": 2}).encode(), 400),
    ("post", "/v1/completions", json.dumps({"prompt": "", "max_tokens": 2}).encode(), 400),
    ("post", "/v1/completions", json.dumps({"prompt": "x" * 60000, "max_tokens": 2}).encode(), 400),
    ("post", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 10**9}).encode(), 400),
    ("post", "/v1/embeddings", json.dumps({"input": 3}).encode(), 400),
    ("post", "/detokenize", json.dumps({"tokens": ["a"]}).encode(), 400),
    ("post", CHAT, b"[" * 100000 + b"]" * 100000, 400),
    ("post", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "seed": 2**70}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "n": 1000}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "top_logprobs": 50, "logprobs": True}).encode(), 400),
    ("post", CHAT, b"\xff\xfe", 400),
    ("post", "/v1/completions", json.dumps({"prompt": "hi", "echo": True, "stream": True}).encode(), 400),
    ("post", "/v1/completions", json.dumps({"prompt": [[]]}).encode(), 400),
    # text that is not valid Unicode (unpaired UTF-16 surrogates) in any field, even a key
    ("post", CHAT, json.dumps({**OK_CHAT, "messages": [{"role": "user", "content": "a\ud800b"}]}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "\udfff"}]}]}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "stop": ["\ud83d"]}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "model": "\ud800"}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "logit_bias": {"\ud800": 1}}).encode(), 400),
    ("post", "/v1/completions", json.dumps({"prompt": ["ok", "\udc00"]}).encode(), 400),
    ("post", "/tokenize", json.dumps({"prompt": "\ud800"}).encode(), 400),
    ("post", "/v1/embeddings", json.dumps({"input": "\ud800"}).encode(), 400),
    # content parts whose text is not a string
    ("post", CHAT, json.dumps({**OK_CHAT, "messages": [{"role": "user", "content": [
        {"type": "text", "text": 5}]}]}).encode(), 400),
    ("post", CHAT, json.dumps({**OK_CHAT, "messages": [{"role": "user", "content": [
        {"type": "text", "text": ["a"]}]}]}).encode(), 400),
    ("post", "/tokenize", json.dumps({"messages": [{"role": "user", "content": [
        {"type": "text", "text": None}]}]}).encode(), 400),
    ("get", "/v1/nowhere", None, 404),
    ("get", CHAT, None, 405),
]


@pytest.mark.parametrize("method,path,body,status", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_request(server, method, path, body, status):
    r = httpx.request(method, server.url + path, content=body, headers={"content-type": "application/json"})
    assert error_of(r, status)["type"]  # right status and a full OpenAI-style error body


def test_list_content_on_tokenize_counts_what_chat_sends(server):
    """/tokenize takes chat's content parts, and counts exactly the ids chat would prefill."""
    parts = [{"type": "text", "text": "Hello "}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "there"}]
    as_parts = httpx.post(server.url + "/tokenize", json={"messages": [{"role": "user", "content": parts}]})
    as_text = httpx.post(server.url + "/tokenize", json={"messages": [{"role": "user", "content": "Hello there"}]})
    assert as_parts.status_code == 200, as_parts.text
    assert as_parts.json()["tokens"] == as_text.json()["tokens"]
    chat = httpx.post(server.url + CHAT, json={**OK_CHAT, "messages": [{"role": "user", "content": parts}]})
    assert chat.json()["usage"]["prompt_tokens"] == as_parts.json()["count"]


def test_unknown_model_and_negative_max_tokens_via_openai(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smollm2", prompt="x", max_tokens=-5)
    assert e.value.body["param"] == "max_tokens"


def test_ten_megabyte_body(server):
    big = json.dumps({**OK_CHAT, "messages": [{"role": "user", "content": "a" * (10 << 20)}]}).encode()
    err = error_of(httpx.post(server.url + CHAT, content=big, headers={"content-type": "application/json"}), 413)
    assert err["code"] == "request_too_large"

    def chunks():  # no content-length: the limit holds for chunked bodies too
        for i in range(0, len(big), 1 << 16):
            yield big[i:i + (1 << 16)]

    r = httpx.post(server.url + CHAT, content=chunks(), headers={"content-type": "application/json"})
    error_of(r, 413)


def metric(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


HOSTILE = [dict(temperature=1e-45), dict(temperature=1e-300), dict(top_p=1e-300), dict(repetition_penalty=1e-300),
           dict(repetition_penalty=1e30), dict(logit_bias={"5": 1e39})]


def test_hostile_sampling_values_never_hurt_requests_in_flight(server):
    """Values that underflow or overflow float32 in the processor chain: each hostile request is
    a 400 or a normal answer, and streams already answering all end with a finish_reason."""
    import concurrent.futures as cf

    def good(i):
        body = {**OK_CHAT, "max_tokens": 24, "temperature": 0.8, "seed": i, "stream": True, "ignore_eos": True}
        finish, done = None, False
        with httpx.stream("POST", server.url + CHAT, json=body, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk, chunk
                    finish = chunk["choices"][0].get("finish_reason") or finish if chunk["choices"] else finish
        return finish, done

    def hostile(values):
        r = httpx.post(server.url + CHAT, json={**OK_CHAT, "max_tokens": 8, **values}, timeout=120)
        assert r.status_code in (200, 400), r.text
        if r.status_code == 400:
            error_of(r, 400)
        return r.status_code

    with cf.ThreadPoolExecutor(12) as pool:
        streams = [pool.submit(good, i) for i in range(6)]
        time.sleep(0.5)  # the good streams are answering before the hostile requests arrive
        codes = list(pool.map(hostile, HOSTILE))
        assert all(f.result() == ("length", True) for f in streams)
    assert codes[2] == 200 and codes.count(400) == 5  # a tiny top_p is valid: the top token stays


def test_disconnect_mid_stream_frees_the_slot(server):
    before = metric(server, "lmlab_client_disconnects_total")
    body = {**OK_CHAT, "max_tokens": 2000, "temperature": 1.0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + CHAT, json=body, timeout=30) as r:
        assert r.status_code == 200
        lines = 0
        for line in r.iter_lines():
            lines += line.startswith("data: ")
            if lines >= 3:
                break
    # the client has gone: the request is aborted and its slot freed long before 2000 tokens
    deadline = time.time() + 10
    while time.time() < deadline and (metric(server, "lmlab_queue_depth") or metric(server, "lmlab_running_sequences")):
        time.sleep(0.1)
    assert metric(server, "lmlab_queue_depth") == 0 and metric(server, "lmlab_running_sequences") == 0
    assert metric(server, "lmlab_client_disconnects_total") == before + 1


def test_disconnect_non_streaming(server):
    body = json.dumps({**OK_CHAT, "max_tokens": 2000, "ignore_eos": True, "temperature": 1.0}).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.5)
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline and metric(server, "lmlab_queue_depth"):
        time.sleep(0.1)
    assert metric(server, "lmlab_queue_depth") == 0


def test_five_hundred_bad_requests_then_a_good_one(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(500):
            method, path, body, status = BAD[i % len(BAD)]
            r = http.request(method, path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == status
        r = http.post(CHAT, json=OK_CHAT)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


# ---- a server with an API key and a queue of one --------------------------------------------------

@pytest.fixture(scope="module")
def keyed(bundled_folder, tmp_path_factory):
    s = start_server(bundled_folder, tmp_path_factory, "--api-key", "sekret", "--max-queue", "1")
    yield s
    s.stop()


def test_api_key(keyed):
    err = error_of(httpx.post(keyed.url + CHAT, json=OK_CHAT), 401)
    assert err["type"] == "authentication_error"
    error_of(httpx.post(keyed.url + CHAT, json=OK_CHAT, headers={"Authorization": "Bearer wrong"}), 401)
    error_of(httpx.get(keyed.url + "/v1/models"), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="sekret", max_retries=0)
    assert good.chat.completions.create(model="smollm2", messages=OK_CHAT["messages"], max_tokens=2).choices
    assert httpx.get(keyed.url + "/health").status_code == 200  # probes stay open


def test_queue_full_is_503_with_retry_after(keyed):
    auth = {"Authorization": "Bearer sekret"}
    body = {**OK_CHAT, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", keyed.url + CHAT, json=body, headers=auth, timeout=30) as r:
        lines = r.iter_lines()  # keep the generator alive: closing it would close the stream
        assert next(lines).startswith("data: ")
        busy = httpx.post(keyed.url + CHAT, json=OK_CHAT, headers=auth)
        err = error_of(busy, 503)
        assert busy.headers["retry-after"] == "1" and (err["type"], err["code"]) == ("server_error", "queue_full")
    deadline = time.time() + 10
    while time.time() < deadline:
        r = httpx.post(keyed.url + CHAT, json=OK_CHAT, headers=auth)
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200


def test_no_key_refuses_a_public_host():
    r = subprocess.run([sys.executable, "-m", "lmlab.cli.main", "serve", "--host", "0.0.0.0", "--port", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "without an API key" in r.stderr


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def test_kv_memory_goes_back_after_a_large_request(server):
    """n x (prompt + max_tokens) slots are reserved at admission; once the request is over and
    the server idle, the cache is back to its idle size (not the largest request's)."""
    idle, idle_rss = metric(server, "lmlab_kv_cache_bytes"), rss_mb(server.proc.pid)
    body = {**OK_CHAT, "n": 8, "max_tokens": 2048, "temperature": 1.0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + CHAT, json=body, timeout=60) as r:
        lines = r.iter_lines()  # kept alive: closing it would end the stream
        assert next(lines).startswith("data: ")
        deadline = time.time() + 60
        while time.time() < deadline and metric(server, "lmlab_running_sequences") < 8:
            time.sleep(0.05)
        big = metric(server, "lmlab_kv_cache_bytes")
        peak_rss = rss_mb(server.proc.pid)
    deadline = time.time() + 20
    while time.time() < deadline and (metric(server, "lmlab_queue_depth") or
                                      metric(server, "lmlab_kv_cache_bytes") > big / 20):
        time.sleep(0.1)
    after = metric(server, "lmlab_kv_cache_bytes")
    # per token and row the bundled model caches 2 x 30 layers x 3 heads x 64 values
    assert big >= 8 * 2048 * 2 * 30 * 3 * 64 * 2 and after < big / 20, (idle, big, after)
    after_rss = rss_mb(server.proc.pid)
    print(f"KV cache {idle / 1e6:.0f} -> {big / 1e6:.0f} -> {after / 1e6:.0f} MB; server RSS {idle_rss:.0f} -> "
          f"{peak_rss:.0f} -> {after_rss:.0f} MB")
    assert after_rss < peak_rss - 0.5 * big / 2**20  # and the process gives the memory back to the machine
