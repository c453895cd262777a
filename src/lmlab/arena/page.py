"""The battle page: a question, two anonymous answers side by side, votes A / B / tie / both bad;
the names are revealed after the vote. Battles and votes live in SQLite, so the votes feed
`ratings` like any battles file (`GET /api/battles.jsonl`, `GET /api/ratings`).

Answers come from answer files (judge/data.py shapes) over a question set; a battle is a random
question and a random pair of models that both answered it, model_a / model_b in random order.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from pydantic import BaseModel

from lmlab.arena.ratings import WINNERS, ratings
from lmlab.errors import LmlabError

VOTES = {"A": "model_a", "B": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}


class Vote(BaseModel):
    battle_id: str
    vote: str  # A | B | tie | bothbad


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self.lock = threading.Lock()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS battles (id TEXT PRIMARY KEY, question_id TEXT, "
                       "model_a TEXT, model_b TEXT, created REAL)")
            db.execute("CREATE TABLE IF NOT EXISTS votes (battle_id TEXT PRIMARY KEY REFERENCES battles(id), "
                       "winner TEXT NOT NULL, tstamp REAL)")

    def _db(self):
        return sqlite3.connect(self.path, timeout=30)

    def new_battle(self, question_id, model_a: str, model_b: str) -> str:
        bid = uuid.uuid4().hex
        with self.lock, self._db() as db:
            db.execute("INSERT INTO battles VALUES (?, ?, ?, ?, ?)",
                       (bid, json.dumps(question_id), model_a, model_b, time.time()))
        return bid

    def battle(self, bid: str):
        with self._db() as db:
            return db.execute("SELECT question_id, model_a, model_b FROM battles WHERE id = ?", (bid,)).fetchone()

    def vote(self, bid: str, winner: str) -> None:
        with self.lock, self._db() as db:
            db.execute("INSERT INTO votes VALUES (?, ?, ?)", (bid, winner, time.time()))

    def voted(self, bid: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM votes WHERE battle_id = ?", (bid,)).fetchone() is not None

    def battles(self) -> list[dict]:
        with self._db() as db:
            rows = db.execute("SELECT b.id, b.question_id, b.model_a, b.model_b, v.winner, v.tstamp FROM votes v "
                              "JOIN battles b ON b.id = v.battle_id ORDER BY v.tstamp").fetchall()
        return [{"battle_id": r[0], "question_id": json.loads(r[1]), "model_a": r[2], "model_b": r[3],
                 "winner": r[4], "tstamp": r[5], "judge": "human"} for r in rows]


def create_app(questions: list[dict], answers: dict[str, dict], db: str | Path, seed: int | None = None):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, PlainTextResponse
    qs = {q["question_id"]: q for q in questions}
    pairs = [(qid, a, b) for qid in qs for a in answers for b in answers if a < b
             and qid in answers[a] and qid in answers[b]]
    if not pairs:
        raise LmlabError("the battle page needs two models that answered the same question "
                         f"(models: {', '.join(sorted(answers)) or 'none'})")
    store = Store(db)
    rng = random.Random(seed)
    app = FastAPI(title="lmlab arena")

    @app.get("/", response_class=HTMLResponse)
    def index():
        return PAGE

    @app.get("/api/battle")
    def battle():
        qid, a, b = rng.choice(pairs)
        if rng.random() < 0.5:
            a, b = b, a
        bid = store.new_battle(qid, a, b)
        return {"battle_id": bid, "question": qs[qid]["question"], "answer_a": answers[a][qid],
                "answer_b": answers[b][qid]}

    @app.post("/api/vote")
    def vote(v: Vote):
        if v.vote not in VOTES:
            raise HTTPException(422, f"vote must be one of {', '.join(VOTES)}, got {v.vote!r}")
        row = store.battle(v.battle_id)
        if row is None:
            raise HTTPException(404, f"no battle {v.battle_id!r}; get one from /api/battle")
        if store.voted(v.battle_id):
            raise HTTPException(409, f"battle {v.battle_id!r} already has a vote")
        store.vote(v.battle_id, VOTES[v.vote])
        return {"battle_id": v.battle_id, "model_a": row[1], "model_b": row[2], "winner": VOTES[v.vote]}

    @app.get("/api/battles.jsonl", response_class=PlainTextResponse)
    def battles_jsonl():
        return "".join(json.dumps(b) + "\n" for b in store.battles())

    @app.get("/api/ratings")
    def api_ratings(bootstrap: int = 100):
        got = store.battles()
        if not got:
            return {"ratings": {}, "n_battles": 0}
        return ratings(got, bootstrap=min(bootstrap, 1000))

    assert set(VOTES.values()) == set(WINNERS)
    return app


PAGE = """<!doctype html><meta charset="utf-8"><title>lmlab arena</title>
<style>body{font-family:sans-serif;margin:2em;max-width:70em}.row{display:flex;gap:1em}
.ans{flex:1;border:1px solid #ccc;padding:1em;white-space:pre-wrap;min-height:8em}
button{margin:0.5em 0.3em;padding:0.5em 1em}#result{font-weight:bold;margin-top:1em}</style>
<h1>Which answer is better?</h1>
<div id="question"></div>
<div class="row"><div class="ans"><h3>Model A</h3><div id="answer_a"></div></div>
<div class="ans"><h3>Model B</h3><div id="answer_b"></div></div></div>
<div id="buttons"><button data-vote="A">A is better</button><button data-vote="B">B is better</button>
<button data-vote="tie">Tie</button><button data-vote="bothbad">Both are bad</button></div>
<div id="result"></div><button id="next" hidden>Next battle</button>
<script>
let current = null;
async function load() {
  const r = await fetch('/api/battle'); current = await r.json();
  document.getElementById('question').textContent = current.question;
  document.getElementById('answer_a').textContent = current.answer_a;
  document.getElementById('answer_b').textContent = current.answer_b;
  document.getElementById('result').textContent = '';
  document.getElementById('next').hidden = true;
  document.querySelectorAll('#buttons button').forEach(b => b.disabled = false);
}
async function vote(v) {
  document.querySelectorAll('#buttons button').forEach(b => b.disabled = true);
  const r = await fetch('/api/vote', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                      body: JSON.stringify({battle_id: current.battle_id, vote: v})});
  const out = await r.json();
  document.getElementById('result').textContent = r.ok
    ? `Model A: ${out.model_a} - Model B: ${out.model_b}` : `error: ${out.detail}`;
  document.getElementById('next').hidden = false;
}
document.querySelectorAll('#buttons button').forEach(b => b.onclick = () => vote(b.dataset.vote));
document.getElementById('next').onclick = load;
load();
</script>
"""
