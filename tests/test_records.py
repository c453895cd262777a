"""The one JSONL reader: file:line errors, skipped rows counted, non-UTF-8 bytes located."""

from __future__ import annotations

import pytest

from lmlab.errors import LmlabError
from lmlab.records import iter_jsonl, read_jsonl


def test_rows_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"x": 1}\n\n{"x": 2}\n')
    assert list(iter_jsonl(p)) == [(1, {"x": 1}), (3, {"x": 2})]


@pytest.mark.parametrize("line, problem", [("{not json", "invalid JSON"), ("[1, 2]", "expected a JSON object, got list")])
def test_a_bad_line_names_file_and_line_or_is_counted_when_skipping(tmp_path, line, problem):
    p = tmp_path / "b.jsonl"
    p.write_text(f'{{"x": 1}}\n{line}\n{{"x": 3}}\n')
    with pytest.raises(LmlabError, match=rf"b\.jsonl:2: {problem}"):
        list(iter_jsonl(p))
    skipped: list[str] = []
    assert [r["x"] for _, r in iter_jsonl(p, skip_bad_rows=True, skipped=skipped)] == [1, 3]
    assert len(skipped) == 1 and skipped[0].endswith(f"b.jsonl:2: {problem}" + skipped[0].split(problem, 1)[1])


def test_bytes_that_are_not_utf8_are_named_by_line_and_offset(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"x": 1}\n{"x": "\xff"}\n')
    with pytest.raises(LmlabError, match=r"c\.jsonl:2: not UTF-8 text \(byte offset 16\)"):
        list(iter_jsonl(p))


def test_required_fields_and_missing_files(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"instruction": "a"}\n{"output": "b"}\n')
    with pytest.raises(LmlabError, match=r"d\.jsonl:2: missing field instruction"):
        read_jsonl(p, required=("instruction",))
    with pytest.raises(LmlabError, match="nope.jsonl: no such file"):
        read_jsonl(tmp_path / "nope.jsonl")
