"""`lmlab rag index` / `lmlab rag search` end to end (BM25-only index: no embedding model needed)."""

import json

from lmlab.cli.main import main


def test_index_then_search_json(docs, tmp_path, capsys):
    (docs / "bad.jsonl").write_text("{broken\n")
    out = tmp_path / "idx"
    assert main(["rag", "index", str(docs), "--out", str(out), "--chunk-tokens", "32", "--overlap", "4",
                 "--dense", "none", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 5 and report["skipped"][0]["path"].endswith("bad.jsonl")
    assert main(["rag", "search", "volcano on Sicily", "--index", str(out), "--k", "2", "--mode", "bm25",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["doc_id"] == "volcano" and hits[0]["score"] >= hits[-1]["score"] and len(hits) <= 2


def test_dense_search_on_a_bm25_only_index_is_refused(docs, tmp_path, capsys):
    out = tmp_path / "idx"
    main(["rag", "index", str(docs), "--out", str(out), "--dense", "none", "--json"])
    capsys.readouterr()
    assert main(["rag", "search", "volcano", "--index", str(out), "--mode", "dense"]) != 0
    assert "BM25-only" in capsys.readouterr().err
