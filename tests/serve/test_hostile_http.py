"""Hostile HTTP against the real app and uvicorn settings (over a model-free runner, in-process):
read deadlines for half-sent requests, keep-alive surviving a 500, Host checks against DNS
rebinding, JSON-only POSTs, and CORS headers only for configured origins."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from lmlab.serve.app import create_app, uvicorn_config
from lmlab.serve.config import ServeConfig

from .conftest import free_port

uvicorn = pytest.importorskip("uvicorn")


class Tokenizer:
    special_tokens, eos_token_id, bos_token_id, vocab_size, chat_template = {}, 0, None, 10, None

    def encode(self, text, add_special_tokens=True):
        raise RuntimeError("a bug in a route")  # what an unexpected exception looks like

    def decode(self, ids, skip_special_tokens=False):
        return "x" * len(ids)


class Runner:
    """Just enough of a runner (lmlab.serve.runner) for routes that never reach an engine."""
    tokenizer, config = Tokenizer(), SimpleNamespace(max_seq_len=64, vocab_size=10)
    running = waiting = steps = step_errors = 0

    def start(self):
        pass

    def stop(self):
        pass

    def alive(self):
        return True


@pytest.fixture(scope="module")
def app_server():
    """url, running server; read_timeout 1 s, one CORS origin."""
    cfg = ServeConfig(port=free_port(), read_timeout=1.0, cors_origins=["https://app.example"])
    server = uvicorn.Server(uvicorn_config(create_app(Runner(), cfg), cfg))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield SimpleNamespace(url=f"http://127.0.0.1:{cfg.port}", port=cfg.port)
    server.should_exit = True
    thread.join(10)


def raw(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send `data`, read until the server closes: (everything read, seconds until closed)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    t0 = time.perf_counter()
    s.sendall(data)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except socket.timeout:
        s.close()
        pytest.fail(f"connection still open after {wait} s; read {got!r}")
    s.close()
    return got, time.perf_counter() - t0


HEAD = b"POST /detokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("data", [
    b"",  # a connection that never sends
    b"POST /detokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty",  # headers never finished
    HEAD + b"Content-Length: 100\r\n\r\n" + b'{"tokens": [1,',  # a body shorter than its Content-Length
], ids=["silent", "half-headers", "short-body"])
def test_half_sent_requests_time_out(app_server, data):
    got, seconds = raw(app_server.port, data)
    assert seconds < 4
    if data:  # something was begun: the client is told why (408, OpenAI-style body)
        assert got.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in got.replace(b" ", b"")


def test_a_500_keeps_the_connection(app_server):
    body = b'{"prompt": "hi"}'
    req = HEAD.replace(b"/detokenize", b"/tokenize") + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    with httpx.Client(base_url=app_server.url) as http:
        r = http.post("/tokenize", json={"prompt": "hi"})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert r.headers.get("connection") != "close"
        assert http.post("/detokenize", json={"tokens": [1, 2]}).json() == {"prompt": "xx"}
    # the same on one raw socket: both answers come back on the connection that saw the 500
    s = socket.create_connection(("127.0.0.1", app_server.port))
    s.settimeout(5)
    s.sendall(req)
    first = response(s)
    s.sendall(HEAD + b'Content-Length: 15\r\n\r\n{"tokens": [1]}')
    second = response(s)
    s.close()
    assert first.startswith(b"HTTP/1.1 500 ") and second.startswith(b"HTTP/1.1 200 ") and second.endswith(b'"x"}')


def response(s: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) read from `s`."""
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("host,status", [
    ("127.0.0.1", 200), ("localhost:8000", 200), ("[::1]:8000", 200), ("chat.localhost", 200),
    ("evil.example", 421), ("evil.example:8000", 421), ("10.0.0.7", 421), ("127.0.0.1.evil.example", 421),
])
def test_host_must_name_this_server(app_server, host, status):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends that Host."""
    r = httpx.get(app_server.url + "/v1/models", headers={"Host": host})
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["error"]["code"] == "misdirected_request"


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_post_needs_json(app_server, ctype):
    """The content types a page on another site can POST without a CORS preflight."""
    headers = {"content-type": ctype} if ctype else {}
    r = httpx.post(app_server.url + "/detokenize", content=b'{"tokens": [1]}', headers=headers)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    ok = httpx.post(app_server.url + "/detokenize", content=b'{"tokens": [1]}',
                    headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_cors_only_for_configured_origins(app_server):
    def preflight(origin):
        return httpx.options(app_server.url + "/v1/chat/completions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})

    good = preflight("https://app.example")
    assert good.status_code == 200 and good.headers["access-control-allow-origin"] == "https://app.example"
    bad = preflight("https://evil.example")
    assert "access-control-allow-origin" not in bad.headers
    r = httpx.get(app_server.url + "/health", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_no_cors_headers_without_configured_origins():
    app = create_app(Runner(), ServeConfig())
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.options("/v1/chat/completions", headers={"Origin": "https://app.example",
                                                            "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
        assert client.get("/health", headers={"Origin": "https://app.example"}).headers.get(
            "access-control-allow-origin") is None
