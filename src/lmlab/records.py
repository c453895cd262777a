"""JSONL records, read the one way every area reads them: each line a JSON object, and a line
that is not one is an error naming the file and line (or, with `skip_bad_rows`, counted and
skipped). Text that is not UTF-8 names the file and the byte offset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from lmlab.errors import LmlabError


def iter_jsonl(path: str | Path, skip_bad_rows: bool = False, skipped: list[str] | None = None
               ) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; bad lines raise, or with skip_bad_rows are
    skipped and their messages appended to `skipped`."""
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"{path}: no such file")
    with path.open("rb") as f:
        offset = 0
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise LmlabError(f"{path}:{n}: not UTF-8 text (byte offset {offset + e.start})") from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem = None if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"
            except json.JSONDecodeError as e:
                problem = f"invalid JSON ({e.msg})"
            if problem:
                message = f"{path}:{n}: {problem}"
                if not skip_bad_rows:
                    raise LmlabError(message)
                if skipped is not None:
                    skipped.append(message)
                continue
            yield n, row


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """Every object of a JSONL file; one missing a `required` field names file:line."""
    rows = []
    for n, row in iter_jsonl(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise LmlabError(f"{path}:{n}: missing field {', '.join(missing)}")
        rows.append(row)
    return rows
