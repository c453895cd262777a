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


def test_reindex_reports_removed_documents(docs, tmp_path, capsys):
    out = tmp_path / "idx"
    args = ["rag", "index", str(docs), "--out", str(out), "--dense", "none"]
    assert main(args + ["--json"]) == 0
    capsys.readouterr()
    (docs / "berlin.md").unlink()
    assert main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["changed"], report["removed"], report["unchanged"]) == (0, 0, 1, 4)
    (docs / "nile.html").unlink()
    assert main(args) == 0
    assert "0 new, 0 changed, 1 removed, 3 unchanged documents" in capsys.readouterr().out
    assert main(["rag", "search", "Brandenburg Gate", "--index", str(out), "--mode", "bm25", "--json"]) == 0
    assert all(not h["doc_id"].endswith("berlin.md") for h in json.loads(capsys.readouterr().out))
