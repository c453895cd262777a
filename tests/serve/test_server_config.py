"""The server states its resolved config (ServeConfig) once at start-up, the key redacted."""

from __future__ import annotations

import json

import httpx

from .conftest import start_server


def config_line(server) -> dict:
    line = next(x for x in server.output().splitlines() if x.startswith("lmlab serve: "))
    return json.loads(line.split(" config ", 1)[1])


def test_resolved_config_is_logged_without_the_key(bundled_folder, tmp_path_factory, tmp_path):
    f = tmp_path / "serve.yaml"
    f.write_text("max_queue: 3\nmax_tokens_limit: 7\n")
    s = start_server(bundled_folder, tmp_path_factory, "--config", str(f), "--api-key", "sekret",
                     "--max-queue", "5", "default_max_tokens=9")
    try:
        cfg = config_line(s)
        assert (cfg["max_queue"], cfg["max_tokens_limit"], cfg["default_max_tokens"]) == (5, 7, 9)
        assert cfg["api_key"] == "***" and "sekret" not in s.output()
        assert cfg["port"] == s.port and cfg["served_model_name"] == "smollm2"
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
        r = httpx.post(s.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sekret"})
        assert r.status_code == 400 and "the limit is 7" in r.json()["error"]["message"]  # the file's value holds
    finally:
        s.stop()


def test_a_kv_cache_ceiling_refuses_only_the_request_that_can_never_fit(bundled_folder, tmp_path_factory):
    s = start_server(bundled_folder, tmp_path_factory, "--max-cache-tokens", "400", "--prefill-chunk", "64")
    try:
        assert (config_line(s)["max_cache_tokens"], config_line(s)["prefill_chunk"]) == (400, 64)
        big = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2000}
        r = httpx.post(s.url + "/v1/chat/completions", json=big, timeout=120)
        assert 400 <= r.status_code < 500 and "max_cache_tokens" in r.json()["error"]["message"]
        ok = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        r = httpx.post(s.url + "/v1/chat/completions", json=ok, timeout=120)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    finally:
        s.stop()
