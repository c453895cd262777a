"""Reading records: formats, streaming, and the errors a user sees for bad input."""

import pytest

from lmlab.data.records import ReadStats, input_files, read_records
from lmlab.errors import LmlabError

from .corpora import write_jsonl


def test_jsonl_text_and_parquet_are_read_with_their_fields(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", [{"text": "one", "url": "u1"}, {"text": "two"}])
    (tmp_path / "b.txt").write_text("a whole document\nwith lines", encoding="utf-8")
    pq.write_table(pa.table({"text": ["three", "four"], "n": [3, 4]}), tmp_path / "c.parquet")
    rows = list(read_records(input_files([str(tmp_path)])))
    assert [r["text"] for r in rows] == ["one", "two", "a whole document\nwith lines", "three", "four"]
    assert rows[0]["url"] == "u1" and rows[4]["n"] == 4
    assert rows[1]["_where"].endswith("a.jsonl:2") and rows[4]["_where"].endswith("c.parquet:row 1")


def test_broken_line_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken\n{"text": "ok too"}\n', encoding="utf-8")
    with pytest.raises(LmlabError, match=r"x\.jsonl:2: invalid JSON.*--skip-bad-rows"):
        list(read_records([p]))


def test_skip_bad_rows_counts_and_skips(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken\n[1, 2]\n{"body": "no text"}\n{"text": "ok too"}\n',
                 encoding="utf-8")
    stats = ReadStats()
    rows = list(read_records([p], skip_bad_rows=True, stats=stats))
    assert [r["text"] for r in rows] == ["ok", "ok too"]
    assert stats.bad_rows == 3 and stats.bad_examples[0].endswith("x.jsonl:2: invalid JSON (Expecting value)")


def test_record_without_text_field_is_a_clear_error(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "fine"}, {"body": "oops", "id": 7}])
    with pytest.raises(LmlabError, match=r"x\.jsonl:2: record has no 'text' text field \(no such field; "
                                         r"fields: body, id\); set text_field="):
        list(read_records([p]))
    assert [r["text"] for r in read_records([p], text_field="body", skip_bad_rows=True)] == ["oops"]


def test_unreadable_inputs(tmp_path):
    with pytest.raises(LmlabError, match="nope.jsonl: no such file or folder"):
        input_files([str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.csvx").write_text("a")
    with pytest.raises(LmlabError, match="unknown format '.csvx'"):
        input_files([str(tmp_path / "x.csvx")])
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(LmlabError, match=r"latin1\.jsonl:2: not UTF-8"):
        list(read_records([bad]))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(LmlabError, match="broken.parquet: not a readable Parquet file"):
        list(read_records([tmp_path / "broken.parquet"]))
