"""Admission under the KV-cache ceiling: a request that does not fit now waits (the running
streams unharmed), is served when room comes, and after `--max-queue-wait` seconds without
starting gets 503 with Retry-After in OpenAI's error shape, whether it streams or not: never a
500, a hang, or an error inside a 200 stream. Real `lmlab serve` processes on the bundled model."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import httpx
import pytest

from .conftest import start_server
from .test_bad_input import CHAT, error_of, metric

# One chat "Hi" prompt (31 tokens) plus 120 tokens fits under 250 cache tokens; two do not.
CEILING, HOLD = "250", 120
HI = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}


def stream_to_end(url: str, body: dict) -> tuple[int, str | None, bool, int]:
    """(status, finish_reason, saw [DONE], tokens generated) of one streamed chat request."""
    finish, done, tokens = None, False, 0
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url + CHAT, json=body, timeout=300) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, None, False, 0
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                for c in chunk["choices"]:
                    finish = c.get("finish_reason") or finish
                tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
    return 200, finish, done, tokens


def wait_for(cond, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not cond():
        time.sleep(0.05)
    assert cond()


@pytest.fixture(scope="module")
def patient(bundled_folder, tmp_path_factory):
    s = start_server(bundled_folder, tmp_path_factory, "--max-cache-tokens", CEILING, "--max-queue-wait", "600")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def impatient(bundled_folder, tmp_path_factory):
    s = start_server(bundled_folder, tmp_path_factory, "--max-cache-tokens", CEILING, "--max-queue-wait", "1")
    yield s
    s.stop()


def test_a_request_past_the_ceiling_waits_and_is_served_when_room_comes(patient):
    hold = {**HI, "max_tokens": HOLD, "ignore_eos": True}
    with cf.ThreadPoolExecutor(2) as pool:
        holder = pool.submit(stream_to_end, patient.url, hold)
        wait_for(lambda: metric(patient, "lmlab_running_sequences") == 1)
        later = pool.submit(stream_to_end, patient.url, {**HI, "max_tokens": HOLD})
        # it is queued (not refused, not squeezed in beside the holder)
        wait_for(lambda: metric(patient, "lmlab_waiting_requests") == 1)
        assert metric(patient, "lmlab_running_sequences") == 1 and not later.done()
        assert holder.result() == (200, "length", True, HOLD)
        status, finish, done, _ = later.result()
        assert (status, done) == (200, True) and finish in ("stop", "length")
    assert metric(patient, "lmlab_rejected_total") == 0


@pytest.mark.parametrize("stream", [True, False])
def test_a_request_that_waits_too_long_gets_503_with_retry_after_and_the_running_stream_goes_on(impatient, stream):
    hold = {**HI, "max_tokens": HOLD, "ignore_eos": True}
    with cf.ThreadPoolExecutor(1) as pool:
        holder = pool.submit(stream_to_end, impatient.url, hold)
        wait_for(lambda: metric(impatient, "lmlab_running_sequences") == 1)
        t0 = time.time()
        r = httpx.post(impatient.url + CHAT, json={**HI, "max_tokens": HOLD, "stream": stream}, timeout=60)
        err = error_of(r, 503)
        assert r.headers["retry-after"] == "1" and (err["type"], err["code"]) == ("server_error", "queue_timeout")
        assert time.time() - t0 >= 1 and not holder.done()  # it waited its second, beside the running stream
        assert holder.result() == (200, "length", True, HOLD)  # the running stream was unharmed
    wait_for(lambda: metric(impatient, "lmlab_queue_depth") == 0)
    ok = httpx.post(impatient.url + CHAT, json={**HI, "max_tokens": 4}, timeout=60)  # room again: served
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_a_request_that_can_never_fit_is_a_4xx_before_its_stream_starts(impatient):
    r = httpx.post(impatient.url + CHAT, json={**HI, "max_tokens": 2000, "stream": True}, timeout=60)
    assert error_of(r, 400)["message"].count("max_cache_tokens") == 1
