"""Reading documents, BM25 against bm25s / rank_bm25 / the formula, persistence, incremental
updates and the refusal of another embedding model."""

import json
import math

import numpy as np
import pytest

from lmlab.errors import LmlabError
from lmlab.rag.index import Index, IndexConfig, bm25_tokens
from lmlab.rag.readers import read_documents

BM25_ONLY = dict(dense="none")


def test_readers_identify_documents_and_skip_unreadable_ones(docs):
    (docs / "broken.jsonl").write_text('{"id": "a", "text": "ok"}\nnot json\n')
    (docs / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    report = read_documents([docs, docs / "missing.txt"])
    ids = sorted(d.doc_id for d in report.documents)
    assert ids == sorted(["kiwi", "volcano", str(docs / "paris.txt"), str(docs / "berlin.md"), str(docs / "nile.html")])
    skipped = dict(report.skipped)
    assert set(skipped) == {str(docs / "broken.jsonl"), str(docs / "blob.bin"), str(docs / "missing.txt")}
    assert "2" in skipped[str(docs / "broken.jsonl")]  # names the bad line
    nile = next(d for d in report.documents if d.doc_id.endswith("nile.html"))
    assert "flowing north" in nile.text and "<p>" not in nile.text and "p{}" not in nile.text


def test_jsonl_id_field(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"context_id": "x1", "text": "alpha"}\n')
    assert [d.doc_id for d in read_documents([tmp_path / "a.jsonl"], id_field="context_id").documents] == ["x1"]
    report = read_documents([tmp_path / "a.jsonl"])
    assert report.skipped and "context_id" in report.skipped[0][1]  # names the fields it has


def _lucene(corpus_tokens, query_tokens, k1, b, idf):
    # Lucene's BM25 drops Robertson's constant (k1 + 1) factor: the ranking is the same
    n, avgdl = len(corpus_tokens), sum(map(len, corpus_tokens)) / len(corpus_tokens)
    scores = []
    for doc in corpus_tokens:
        s = 0.0
        for t in set(query_tokens):
            tf, df = doc.count(t), sum(t in d for d in corpus_tokens)
            if tf:
                s += idf(n, df) * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(s)
    return np.array(scores)


SENTENCES = ["the quick brown fox jumps over the lazy dog", "a fox hunts rabbits in the forest at night",
             "dogs and cats sleep all day", "the stock market fell sharply on monday",
             "investors sold shares as the market dropped", "rabbits eat carrots and lettuce in gardens",
             "night trains run from paris to vienna", "a lazy afternoon in the garden with cats"]


def _bm25_index(tmp_path, **kw):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": f"s{i}", "text": s}) + "\n"
                                              for i, s in enumerate(SENTENCES)))
    index, _ = Index.build([tmp_path / "c.jsonl"], tmp_path / "idx", IndexConfig(**BM25_ONLY, **kw))
    return Index.load(tmp_path / "idx")  # scores from the persisted index


@pytest.mark.parametrize("query", ["lazy fox", "market rabbits night", "cats garden"])
def test_bm25_scores_equal_bm25s_and_the_lucene_formula(tmp_path, query):
    import bm25s

    index = _bm25_index(tmp_path)
    ref = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    ref.index([bm25_tokens(s) for s in SENTENCES], show_progress=False)
    np.testing.assert_allclose(index.bm25_scores(query), ref.get_scores(bm25_tokens(query)), rtol=1e-6)
    formula = _lucene([bm25_tokens(s) for s in SENTENCES], bm25_tokens(query), 1.5, 0.75,
                     lambda n, df: math.log(1 + (n - df + 0.5) / (df + 0.5)))
    np.testing.assert_allclose(index.bm25_scores(query), formula, rtol=1e-5)
    hits = index.search_bm25(query, 3)
    assert [s for _, s in hits] == pytest.approx(sorted(formula, reverse=True)[:len(hits)], rel=1e-5)
    assert all(formula[i] == pytest.approx(s, rel=1e-5) for i, s in hits)


def test_bm25_robertson_scores_equal_rank_bm25(tmp_path):
    rank_bm25 = pytest.importorskip("rank_bm25")
    index = _bm25_index(tmp_path, bm25_method="robertson")
    ref = rank_bm25.BM25Okapi([bm25_tokens(s) for s in SENTENCES], k1=1.5, b=0.75)
    for query in ["lazy fox", "market rabbits night", "carrots"]:
        # every term here is in fewer than half the documents, so rank_bm25's epsilon floor is unused;
        # bm25s leaves out the constant (k1 + 1) factor of the numerator, which rank_bm25 keeps
        np.testing.assert_allclose(index.bm25_scores(query) * (1.5 + 1), ref.get_scores(bm25_tokens(query)),
                                   rtol=1e-5)


def test_incremental_update_reindexes_new_and_changed_documents_only(docs, tmp_path):
    out = tmp_path / "idx"
    _, first = Index.build([docs], out, IndexConfig(chunk_tokens=16, overlap=4))
    assert (first.added, first.changed, first.unchanged) == (5, 0, 0) and first.embedded == first.chunks
    before = Index.load(out)
    (docs / "paris.txt").write_text("Paris is the capital of France. It has about two million inhabitants.")
    (docs / "rome.txt").write_text("Rome is the capital of Italy.")
    _, second = Index.build([docs], out, IndexConfig(chunk_tokens=16, overlap=4))
    assert (second.added, second.changed, second.unchanged) == (1, 1, 4)
    after = Index.load(out)
    new_ids = {c.doc_id for c in after.chunks} - {c.doc_id for c in before.chunks}
    assert new_ids == {str(docs / "rome.txt")}
    assert second.embedded == sum(c.doc_id in (str(docs / "rome.txt"), str(docs / "paris.txt")) for c in after.chunks)
    # kept vectors are the old ones, the index answers with the new text
    old = {c.chunk_id: v for c, v in zip(before.chunks, before.vectors)}
    for c, v in zip(after.chunks, after.vectors):
        if c.doc_id.endswith("berlin.md"):
            np.testing.assert_array_equal(v, old[c.chunk_id])
    top = after.chunks[after.search_dense("How many people live in Paris?", 1)[0][0]]
    assert "inhabitants" in top.text
    _, third = Index.build([docs], out, IndexConfig(chunk_tokens=16, overlap=4))
    assert (third.added, third.changed, third.embedded) == (0, 0, 0)


def test_an_index_from_another_embedding_model_is_refused(docs, tmp_path):
    out = tmp_path / "idx"
    Index.build([docs], out, IndexConfig(chunk_tokens=32, overlap=0))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    manifest["embedding_model"] = "BAAI/bge-small-en-v1.5"  # as if another model had built it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LmlabError, match="bge-small-en-v1.5.*all-MiniLM-L6-v2"):
        Index.build([docs], out, IndexConfig(chunk_tokens=32, overlap=0, embedding="all-MiniLM-L6-v2"))
    with pytest.raises(LmlabError, match="bge-small-en-v1.5.*all-MiniLM-L6-v2"):
        Index.load(out, embedding="all-MiniLM-L6-v2")


def test_an_update_with_other_chunk_settings_is_refused(docs, tmp_path):
    Index.build([docs], tmp_path / "idx", IndexConfig(chunk_tokens=32, overlap=0, **BM25_ONLY))
    with pytest.raises(LmlabError, match="chunk_tokens=32"):
        Index.build([docs], tmp_path / "idx", IndexConfig(chunk_tokens=64, overlap=0, **BM25_ONLY))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_dense_indexes_find_the_exact_neighbours_on_a_small_corpus(docs, tmp_path, kind):
    flat, _ = Index.build([docs], None, IndexConfig(chunk_tokens=16, overlap=4))
    approx, _ = Index.build([docs], tmp_path / kind, IndexConfig(chunk_tokens=16, overlap=4, dense=kind))
    approx = Index.load(tmp_path / kind)
    q = "Which river flows into the Mediterranean?"
    assert [i for i, _ in approx.search_dense(q, 3)] == [i for i, _ in flat.search_dense(q, 3)]


def _chunk_ids(index):
    return sorted(c.chunk_id for c in index.chunks)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_documents_gone_from_the_inputs_are_pruned_from_bm25_and_faiss(docs, tmp_path, kind):
    cfg = lambda: IndexConfig(chunk_tokens=16, overlap=4, dense=kind)  # noqa: E731
    out = tmp_path / "idx"
    Index.build([docs], out, cfg())
    before = Index.load(out)
    (docs / "berlin.md").unlink()  # a file deleted
    (docs / "rows.jsonl").write_text('{"id": "kiwi", "text": "The kiwi is a flightless bird native to New Zealand."}\n')
    (docs / "paris.txt").write_text("Paris is the capital of France. It has about two million inhabitants.")
    _, report = Index.build([docs], out, cfg())
    assert (report.added, report.changed, report.removed, report.unchanged, report.kept) == (0, 1, 2, 2, 0)
    after = Index.load(out)
    gone = {str(docs / "berlin.md"), "volcano"}
    assert not gone & {c.doc_id for c in after.chunks} and not gone & set(after.documents)
    assert len(after.vectors) == len(after.chunks) == after._dense.ntotal
    assert report.embedded == sum(c.doc_id == str(docs / "paris.txt") for c in after.chunks)
    old = {c.chunk_id: v for c, v in zip(before.chunks, before.vectors)}
    for c, v in zip(after.chunks, after.vectors):  # the rest kept its vectors, not re-embedded
        if c.doc_id == "kiwi":
            np.testing.assert_array_equal(v, old[c.chunk_id])
    # the pruned index answers as one built afresh from what is left
    fresh, _ = Index.build([docs], None, cfg())
    assert _chunk_ids(after) == _chunk_ids(fresh)
    for q in ("Brandenburg Gate in Berlin", "active volcano on Sicily", "inhabitants of Paris"):
        by_id = lambda ix, scores: {ix.chunks[i].chunk_id: s for i, s in enumerate(scores)}  # noqa: E731
        got, want = by_id(after, after.bm25_scores(q)), by_id(fresh, fresh.bm25_scores(q))
        assert got == pytest.approx(want, rel=1e-6)
        hits = [after.chunks[i].chunk_id for i, _ in after.search_dense(q, 3)]
        assert hits == [fresh.chunks[i].chunk_id for i, _ in fresh.search_dense(q, 3)]
        assert not {after.chunks[i].doc_id for i, _ in after.search_dense(q, len(after))} & gone


def test_indexing_another_folder_keeps_the_first_unless_prune_all(docs, tmp_path):
    more = tmp_path / "more"
    more.mkdir()
    (more / "rome.txt").write_text("Rome is the capital of Italy.")
    out = tmp_path / "idx"
    Index.build([docs], out, IndexConfig(**BM25_ONLY))
    _, report = Index.build([more], out, IndexConfig(**BM25_ONLY))
    assert (report.added, report.removed, report.kept) == (1, 0, 5)
    (docs / "paris.txt").unlink()  # outside this run's inputs: not noticed
    _, report = Index.build([more], out, IndexConfig(**BM25_ONLY))
    assert (report.unchanged, report.removed, report.kept) == (1, 0, 5)
    _, report = Index.build([more], out, IndexConfig(**BM25_ONLY), prune="all")
    assert (report.unchanged, report.removed, report.kept) == (1, 5, 0)
    assert set(Index.load(out).documents) == {str(more / "rome.txt")}
    with pytest.raises(LmlabError, match="prune='some'.*inputs, all, none"):
        Index.build([more], out, IndexConfig(**BM25_ONLY), prune="some")


def test_a_deleted_file_named_again_is_pruned_an_unreadable_one_kept(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Alpha is the first letter of the Greek alphabet.")
    b.write_text("Beta is the second letter of the Greek alphabet.")
    out = tmp_path / "idx"
    Index.build([a, b], out, IndexConfig(**BM25_ONLY))
    a.write_bytes(b"\x00\x01 binary now")  # a read error is not a deletion
    b.unlink()
    _, report = Index.build([a, b], out, IndexConfig(**BM25_ONLY))
    assert (report.removed, report.unchanged, len(report.skipped)) == (1, 0, 2)
    index = Index.load(out)
    assert set(index.documents) == {str(a)} and "Alpha" in index.chunks[0].text
    _, report = Index.build([a, b], out, IndexConfig(**BM25_ONLY), prune="none")  # nothing leaves
    assert report.removed == 0 and set(Index.load(out).documents) == {str(a)}


def test_an_index_pruned_to_nothing_loads_and_finds_nothing(docs, tmp_path):
    out = tmp_path / "idx"
    Index.build([docs], out, IndexConfig(chunk_tokens=16, overlap=4))
    for f in docs.iterdir():
        f.unlink()
    _, report = Index.build([docs], out, IndexConfig(chunk_tokens=16, overlap=4))
    assert (report.removed, report.chunks) == (5, 0)
    assert not (out / "dense.faiss").exists() and not (out / "bm25").exists()
    index = Index.load(out)
    assert len(index) == 0 and index.search_bm25("volcano", 3) == [] and index.search_dense("volcano", 3) == []
