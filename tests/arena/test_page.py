"""The battle page over HTTP: a vote reaches SQLite and the ratings; names stay hidden until the
vote; a vote for an unknown battle is a 404; the page in headless Chromium when it is installed."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

QUESTIONS = [{"question_id": i, "question": f"question {i}"} for i in range(5)]
ANSWERS = {"alpha": {i: f"alpha says {i}" for i in range(5)}, "beta": {i: f"beta says {i}" for i in range(5)},
           "gamma": {0: "gamma says 0"}}


@pytest.fixture
def client(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lmlab.arena.page import create_app

    return TestClient(create_app(QUESTIONS, ANSWERS, tmp_path / "votes.sqlite", seed=0)), tmp_path / "votes.sqlite"


def test_vote_reaches_sqlite_and_the_ratings(client):
    c, db = client
    winners = {}
    for _ in range(6):
        b = c.get("/api/battle").json()
        assert set(b) == {"battle_id", "question", "answer_a", "answer_b"}  # no names before the vote
        # vote for whichever side shows alpha's answer
        side = "A" if b["answer_a"].startswith("alpha") else "B" if b["answer_b"].startswith("alpha") else "tie"
        r = c.post("/api/vote", json={"battle_id": b["battle_id"], "vote": side})
        assert r.status_code == 200
        out = r.json()
        assert {out["model_a"], out["model_b"]} <= set(ANSWERS)  # names revealed after the vote
        winners[b["battle_id"]] = out["winner"]
    rows = sqlite3.connect(db).execute("SELECT battle_id, winner FROM votes").fetchall()
    assert dict(rows) == winners
    assert len(c.get("/api/battles.jsonl").text.splitlines()) == 6
    rt = c.get("/api/ratings", params={"bootstrap": 20}).json()
    assert rt["n_battles"] == 6
    alpha = rt["ratings"]["alpha"]["rating"]
    assert all(alpha >= v["rating"] for v in rt["ratings"].values())


def test_bad_votes_are_4xx(client):
    c, _ = client
    r = c.post("/api/vote", json={"battle_id": "nope", "vote": "A"})
    assert r.status_code == 404 and "no battle 'nope'" in r.json()["detail"]
    b = c.get("/api/battle").json()
    assert c.post("/api/vote", json={"battle_id": b["battle_id"], "vote": "C"}).status_code == 422
    assert c.post("/api/vote", json={"battle_id": b["battle_id"], "vote": "A"}).status_code == 200
    assert c.post("/api/vote", json={"battle_id": b["battle_id"], "vote": "B"}).status_code == 409


def test_page_is_served(client):
    c, _ = client
    html = c.get("/").text
    assert "/api/vote" in html and "Both are bad" in html


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chromium:
    """Headless Chromium driven over the DevTools protocol (websocket-client; no playwright)."""

    def __init__(self, exe, profile):
        import subprocess
        import time

        self.proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "--remote-allow-origins=*", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        import httpx
        import websocket

        while True:
            try:
                pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        self.n = 0

    def call(self, method, **params):
        import json

        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg.get("result", {})

    def eval(self, js):
        return self.call("Runtime.evaluate", expression=js, returnByValue=True).get("result", {}).get("value")

    def wait(self, js, seconds=60):
        import time

        deadline = time.time() + seconds
        while not self.eval(js):
            assert time.time() < deadline, f"timed out waiting for {js}"
            time.sleep(0.2)

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


def test_page_in_headless_chromium(client, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the page was tested over HTTP only")
    pytest.importorskip("websocket", reason="websocket-client is not installed (drives Chromium's DevTools)")
    import threading

    import uvicorn

    from lmlab.arena.page import create_app

    _, db = client
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(QUESTIONS, ANSWERS, db, seed=1), port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    profile = tmp_path / "profile"
    profile.mkdir()
    browser = Chromium(exe, profile)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        browser.wait("document.getElementById('answer_a') && document.getElementById('answer_a').textContent.length > 0")
        shown = browser.eval("document.body.innerText")
        assert not any(f"Model A: {m}" in shown for m in ANSWERS)  # anonymous until the vote
        browser.eval("document.querySelector('button[data-vote=A]').click()")
        browser.wait("document.getElementById('result').textContent.includes('Model A:')")
        result = browser.eval("document.getElementById('result').textContent")
    finally:
        browser.close()
        server.should_exit = True
    (winner,) = sqlite3.connect(db).execute(
        "SELECT b.model_a FROM votes v JOIN battles b ON b.id = v.battle_id WHERE v.winner = 'model_a'").fetchone()
    assert result.startswith(f"Model A: {winner}")
