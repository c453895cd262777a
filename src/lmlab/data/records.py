"""Records in and out: JSONL, text and Parquet files read as a stream of batches; JSONL or
Parquet written, one batch per file.

A record is a dict with at least a `text` string; every other field it came with is kept.
Reading streams (a JSONL line or a Parquet row group at a time), so a corpus larger than
memory works. A broken line is an error naming the file and line, or, with `skip_bad_rows`,
counted and skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lmlab.errors import LmlabError

SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt", ".md", ".parquet")

try:  # JSON parsing and writing are most of what curation does besides its steps
    import orjson

    def _dumps(obj) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    _loads = orjson.loads
    _JSONError: tuple = (orjson.JSONDecodeError,)
except ImportError:
    def _dumps(obj) -> bytes:
        return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    _loads = json.loads
    _JSONError = (json.JSONDecodeError,)


@dataclass
class ReadStats:
    bad_rows: int = 0
    bad_examples: list[str] = field(default_factory=list)  # "file:line: why", the first few

    def skip(self, message: str) -> None:
        self.bad_rows += 1
        if len(self.bad_examples) < 20:
            self.bad_examples.append(message)


def input_files(inputs: list[str]) -> list[Path]:
    """The files behind the arguments: files as given, folders searched for known suffixes."""
    files: list[Path] = []
    for spec in inputs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise LmlabError(f"{p}: no {', '.join(SUFFIXES)} files in this folder")
            files += found
        elif p.is_file():
            if p.suffix.lower() not in SUFFIXES:
                raise LmlabError(f"{p}: unknown format {p.suffix!r} (expected {', '.join(SUFFIXES)})")
            files.append(p)
        else:
            raise LmlabError(f"{spec}: no such file or folder")
    for f in files:
        if not os.access(f, os.R_OK):
            raise LmlabError(f"{f}: cannot read this file (permission denied)")
    return files


def read_records(files: list[Path], text_field: str = "text", skip_bad_rows: bool = False,
                 stats: ReadStats | None = None) -> Iterator[dict]:
    """Every record of every file in order; each gets "_where" ("file:line") for messages."""
    stats = stats if stats is not None else ReadStats()
    for path in files:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            yield from _jsonl(path, text_field, skip_bad_rows, stats)
        elif suffix == ".parquet":
            yield from _parquet(path, text_field, skip_bad_rows, stats)
        else:  # a text file is one document
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as e:
                raise LmlabError(f"{path}: cannot read ({e.strerror})") from None
            yield {"text": text, "_where": f"{path}:1"}


def batches(records: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for r in records:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check(row, where: str, text_field: str, skip: bool, stats: ReadStats) -> dict | None:
    if not isinstance(row, dict):
        problem = f"{where}: expected a JSON object, got {type(row).__name__}"
    elif not isinstance(row.get(text_field), str):
        got = "no such field" if text_field not in row else f"a {type(row[text_field]).__name__}"
        problem = (f"{where}: record has no {text_field!r} text field ({got}; fields: "
                   f"{', '.join(map(str, row)) or 'none'}); set text_field= to the field holding the text")
    else:
        out = dict(row)
        if text_field != "text":
            out["text"] = out.pop(text_field)
        out["_where"] = where
        return out
    if not skip:
        raise LmlabError(problem + " (or pass --skip-bad-rows to count and skip such rows)")
    stats.skip(problem)
    return None


def _jsonl(path: Path, text_field: str, skip: bool, stats: ReadStats) -> Iterator[dict]:
    try:
        f = open(path, "rb")  # decoded line by line, so a bad byte is reported at its line
    except OSError as e:
        raise LmlabError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if not skip:
                    raise LmlabError(f"{path}:{n}: not UTF-8 text ({e.reason}); pass --skip-bad-rows to count "
                                     f"and skip such lines") from None
                stats.skip(f"{path}:{n}: not UTF-8 text ({e.reason})")
                continue
            if not line.strip():
                continue
            msg = None
            try:
                row = _loads(line)
            except _JSONError:
                row, msg = _json_fallback(line)
            if msg:
                if not skip:
                    raise LmlabError(f"{path}:{n}: invalid JSON ({msg}); pass --skip-bad-rows to count "
                                     f"and skip broken lines") from None
                stats.skip(f"{path}:{n}: invalid JSON ({msg})")
                continue
            rec = _check(row, f"{path}:{n}", text_field, skip, stats)
            if rec is not None:
                yield rec


def _json_fallback(line: str):
    """(row, None) where only orjson refused the line (an integer past 64 bits), else (None, why)."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        return None, e.msg


def _parquet(path: Path, text_field: str, skip: bool, stats: ReadStats) -> Iterator[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LmlabError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's errors for a truncated or foreign file
        raise LmlabError(f"{path}: not a readable Parquet file ({e})") from None
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for r in batch.to_pylist():
            rec = _check(r, f"{path}:row {row}", text_field, skip, stats)
            row += 1
            if rec is not None:
                yield rec


def public(record: dict) -> dict:
    """The record as written out: without lmlab's bookkeeping fields (those starting with "_")."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def write_jsonl(path: Path, records, *, keep_private: tuple[str, ...] = ()) -> int:
    """Write atomically (a temporary file renamed into place), so a killed run never leaves half a
    file that a resumed run would take for finished. Returns the bytes written."""
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with open(tmp, "wb") as f:
        for r in records:
            out = public(r)
            for k in keep_private:
                if k in r:
                    out[k] = r[k]
            line = _dumps(out)
            size += len(line)
            f.write(line)
    os.replace(tmp, path)
    return size


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LmlabError("writing Parquet needs pyarrow: pip install pyarrow") from None
    return pa, pq


def _write_table(path: Path, table) -> int:
    _, pq = _pyarrow()
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, tmp)  # one row group: a batch is the unit of output and of resumption
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return size


def write_parquet(path: Path, records) -> int:
    """One batch as a Parquet file, atomically like `write_jsonl`. Columns are the public fields of
    any record, in order of first appearance (a record without a field reads back null there);
    each column's type is inferred over the whole batch. Returns the bytes written."""
    pa, _ = _pyarrow()
    rows = [public(r) for r in records]
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns = {}
    for name in names:
        try:
            columns[name] = pa.array([r.get(name) for r in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            kinds = [(type(r[name]), r.get("_where")) for r in records if r.get(name) is not None]
            where = next((w for t, w in kinds if t is not kinds[0][0]), kinds[0][1] if kinds else None)
            raise LmlabError(f"{where or path}: field {name!r} holds values that do not fit one Parquet column "
                             f"({e}); write JSONL instead (out_format=jsonl)") from None
    return _write_table(path, pa.table(columns) if names else pa.table({}))


def unify_parquet(paths: list[Path]) -> int:
    """Give every part file one schema, so that readers that take the first file's schema for all
    (`datasets.load_dataset("parquet")`) read them all: a column missing from a part is added as
    nulls, a narrower type (null, int64 beside double) widened. Only parts that differ are
    rewritten, one at a time; returns how many were. Idempotent, so a killed run redoes it."""
    pa, pq = _pyarrow()
    schemas = [pq.read_schema(p) for p in paths]
    try:
        target = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError) as e:
        raise LmlabError(f"{paths[0].parent}: the batches disagree on a column's type ({e}); Parquet needs one "
                         f"type per column: write JSONL instead (out_format=jsonl)") from None
    target = target.remove_metadata()
    rewritten = 0
    for path, schema in zip(paths, schemas):
        if schema.remove_metadata().equals(target):
            continue
        table = pq.read_table(path)
        try:
            cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
                    else pa.nulls(table.num_rows, f.type) for f in target]
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise LmlabError(f"{path}: cannot bring this part to the run's schema ({e}); write JSONL instead "
                             f"(out_format=jsonl)") from None
        _write_table(path, pa.Table.from_arrays(cols, schema=target))
        rewritten += 1
    return rewritten


def read_jsonl(path: Path) -> list[dict]:
    """A file lmlab wrote itself (no checks needed)."""
    with open(path, "rb") as f:
        return [_loads(line) for line in f]
