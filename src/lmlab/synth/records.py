"""Reading seed files and writing synthetic records so that a killed run resumes.

Records go to a JSONL file one line at a time (flushed); after each round, a small progress file
beside it (`OUT.progress.json`, written atomically) holds the round count. A resumed run reads both:
records already written feed the filters again (so nothing is written twice), and the round count
gives every later round the same seeds as an uninterrupted run would have used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lmlab.errors import LmlabError


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """The records of a JSONL file; a broken line or a missing field names file:line."""
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmlabError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise LmlabError(f"{path}:{n}: expected a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise LmlabError(f"{path}:{n}: missing field {', '.join(missing)}")
            rows.append(row)
    return rows


class Output:
    """An append-only JSONL output with a round counter for resuming."""

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path)
        self.progress_path = self.path.with_name(self.path.name + ".progress.json")
        if overwrite:
            self.path.unlink(missing_ok=True)
            self.progress_path.unlink(missing_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = read_jsonl(self.path) if self.path.exists() else []
        self.state = json.loads(self.progress_path.read_text()) if self.progress_path.exists() else {"round": 0}
        self._f = self.path.open("a", encoding="utf-8")

    @property
    def resumed(self) -> bool:
        return bool(self.records)

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        self.records.append(record)

    def end_round(self, **state) -> None:
        self.state.update(state, round=self.state["round"] + 1)
        tmp = self.progress_path.with_name(self.progress_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.progress_path)

    def close(self) -> None:
        self._f.close()
