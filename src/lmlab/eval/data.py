"""Evaluation data: local JSONL / JSON / CSV / Parquet / text files, or an HF hub dataset.

Every record remembers where it came from ("file.jsonl:12"), so that a bad item produces an
error naming the file and the line, not a KeyError deep inside a task.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.records import iter_jsonl


@dataclass
class Record:
    fields: dict
    where: str  # "path:line" (1-based line of the file), or "path:row N" for Parquet / hub data
    group: str = ""  # e.g. the MMLU subject: few-shot examples come from the same group


def bad(record: Record, message: str) -> LmlabError:
    return LmlabError(f"{record.where}: {message}")


def load_records(source: str | Path, split: str | None = None, csv_header: bool = True) -> list[Record]:
    """Records from a local file (by extension) or, for "hf:org/name[:config]", the hub."""
    source = str(source)
    if source.startswith("hf:"):
        return _load_hub(source[3:], split)
    path = Path(source).expanduser()
    if not path.exists():
        raise LmlabError(f"{source}: no such file (give a local JSONL/JSON/CSV/Parquet/text file, "
                         f"or hf:org/name[:config] for a hub dataset)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _load_jsonl(path)
    if suffix == ".json":
        return _load_json(path)
    if suffix in (".csv", ".tsv"):
        return _load_csv(path, "\t" if suffix == ".tsv" else ",", csv_header)
    if suffix == ".parquet":
        return _load_parquet(path)
    if suffix in (".txt", ".md", ""):
        return [Record({"text": path.read_text(encoding="utf-8")}, f"{path}:1")]
    raise LmlabError(f"{path}: unknown data format {suffix!r} (expected .jsonl, .json, .csv, .tsv, "
                     f".parquet or .txt)")


def _load_jsonl(path: Path) -> list[Record]:
    return [Record(row, f"{path}:{n}") for n, row in iter_jsonl(path)]


def _load_json(path: Path) -> list[Record]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LmlabError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(rows, dict):  # {"data": [...]} or similar: the one list inside
        lists = [v for v in rows.values() if isinstance(v, list)]
        rows = lists[0] if len(lists) == 1 else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise LmlabError(f"{path}: expected a JSON list of objects")
    return [Record(r, f"{path}:item {i}") for i, r in enumerate(rows)]


def _load_csv(path: Path, delimiter: str, header: bool) -> list[Record]:
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        names = None
        for row in reader:
            line = reader.line_num  # the line the row ends on; quoted fields may span lines
            if header and names is None:
                names = row
                continue
            if not any(cell.strip() for cell in row):
                continue
            fields = dict(zip(names, row)) if names else {str(i): v for i, v in enumerate(row)}
            if names and len(row) != len(names):
                raise LmlabError(f"{path}:{line}: {len(row)} columns, the header has {len(names)}")
            out.append(Record(fields, f"{path}:{line}"))
    return out


def _load_parquet(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LmlabError("reading Parquet needs pyarrow: pip install pyarrow") from None
    rows = pq.read_table(path).to_pylist()
    return [Record(r, f"{path}:row {i}") for i, r in enumerate(rows)]


def _load_hub(spec: str, split: str | None) -> list[Record]:
    """hf:org/name or hf:org/name:config (needs `datasets` and the network, or its cache)."""
    try:
        import datasets
    except ImportError:
        raise LmlabError("hub datasets need the `datasets` package: pip install datasets") from None
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "test")
    except Exception as e:  # offline, unknown name, unknown split: all one line for the user
        raise LmlabError(f"hf:{spec}: cannot load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"offline, give a local file instead") from None
    return [Record(dict(r), f"hf:{spec}[{split or 'test'}]:row {i}") for i, r in enumerate(ds)]
