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


def test_page_in_headless_chromium(client):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the page was tested over HTTP only")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    import threading

    import uvicorn

    from lmlab.arena.page import create_app

    _, db = client
    server = uvicorn.Server(uvicorn.Config(create_app(QUESTIONS, ANSWERS, db, seed=1), port=8765, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, headless=True)
            page = browser.new_page()
            page.goto("http://127.0.0.1:8765/")
            page.wait_for_function("document.getElementById('answer_a').textContent.length > 0")
            page.click("button[data-vote=A]")
            page.wait_for_function("document.getElementById('result').textContent.includes('Model A:')")
            browser.close()
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 1
    finally:
        server.should_exit = True
