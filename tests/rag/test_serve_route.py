"""/v1/rag/search and /v1/rag/ask on the app with a scripted runner (no model): retrieval, citations
mapped, abstention, unknown index and bad names refused."""

import asyncio
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


class ScriptedRunner:
    """What the app needs of a runner; every request is answered with `reply` at once."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.prompts = tokenizer, reply, []
        self.config = SimpleNamespace(max_seq_len=2048, vocab_size=tokenizer.vocab_size)

    def start(self):
        return self

    def stop(self):
        pass

    def add(self, ids, params, stream=False):
        self.prompts.append(self.tokenizer.decode(ids))
        q = asyncio.Queue()
        out = SimpleNamespace(text=self.reply, token_ids=[1, 2])
        q.put_nowait(("done", SimpleNamespace(outputs=[out])))
        return f"r{len(self.prompts)}", q

    def abort(self, rid):
        pass


@pytest.fixture
def app_client(docs, tmp_path, tokenizer):
    from fastapi.testclient import TestClient

    from lmlab.rag import Index, IndexConfig
    from lmlab.serve.app import create_app
    from lmlab.serve.config import ServeConfig

    Index.build([docs], tmp_path / "indexes" / "facts", IndexConfig(chunk_tokens=64, overlap=8))
    runner = ScriptedRunner(tokenizer, "Mount Etna is on Sicily [1].")
    app = create_app(runner, ServeConfig(rag_indexes=str(tmp_path / "indexes")))
    with TestClient(app, base_url="http://127.0.0.1") as client:  # the server checks Host (DNS rebinding)
        yield client, runner


def test_search_and_ask(app_client):
    client, runner = app_client
    r = client.post("/v1/rag/search", json={"index": "facts", "query": "volcano on Sicily", "k": 2})
    assert r.status_code == 200 and r.json()["data"][0]["doc_id"] == "volcano"
    r = client.post("/v1/rag/ask", json={"index": "facts", "query": "Where is Mount Etna?", "k": 2})
    body = r.json()
    assert r.status_code == 200, body
    assert body["answer"] == "Mount Etna is on Sicily [1]."
    assert body["citations"][0]["doc_id"] == "volcano" and body["retrieved"][0]["doc_id"] == "volcano"
    assert "[1] Mount Etna is an active volcano" in runner.prompts[0]


def test_abstention_and_bad_indexes(app_client):
    client, runner = app_client
    r = client.post("/v1/rag/ask", json={"index": "facts", "query": "quantum chromodynamics gluon lattice",
                                         "min_similarity": 0.5})
    assert r.json()["abstained"] and not runner.prompts
    r = client.post("/v1/rag/search", json={"index": "nope", "query": "x"})
    assert r.status_code == 404 and "available: facts" in r.json()["error"]["message"]
    r = client.post("/v1/rag/search", json={"index": "../etc", "query": "x"})
    assert r.status_code == 400


def test_index_listing(app_client, tmp_path, tokenizer):
    from fastapi.testclient import TestClient

    from lmlab.rag import Index
    from lmlab.serve.app import create_app

    client, _ = app_client
    root = tmp_path / "indexes"
    (root / "not-an-index").mkdir()  # no manifest: not listed
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{ not json")
    built = Index.load(root / "facts")
    r = client.get("/v1/rag/indexes")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["name"] for d in data] == ["broken", "facts"]
    broken, facts = data
    assert "broken/manifest.json: unreadable manifest" in broken["error"]
    assert facts["documents"] == len(built.documents) == 5 and facts["chunks"] == len(built.chunks) > 0
    assert facts["embedding_model"] == built.embedding_name and facts["embedding_model"]
    assert facts["dense"] == "flat"

    with TestClient(create_app(ScriptedRunner(tokenizer, ""), None), base_url="http://127.0.0.1") as bare:
        r = bare.get("/v1/rag/indexes")
        assert r.status_code == 200 and r.json() == {"object": "list", "data": []}
