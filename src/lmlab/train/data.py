"""Training data: read records, turn them into token ids with a loss mask, batch them.

Formats (detected per record):
- {"prompt", "completion"}: loss on the completion;
- {"messages": [{"role", "content"}, ...]}: loss on assistant turns only;
- Alpaca {"instruction", "input"?, "output"}: instruction (+ input) as the prompt.
With the chat template (the default for a model that has one) prompts become a user turn and
completions the assistant's answer, ended by the template's end-of-turn token.

Batching spends no compute on padding: `length_batches` groups examples of similar length, and
`packed_batches` concatenates them into full rows whose attention stops at sequence boundaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from lmlab.errors import LmlabError

IGNORE = -100  # label value that the loss skips (the convention of transformers and PyTorch)


# ---- reading ------------------------------------------------------------------------------------

def read_records(path: str | Path, skip_bad_rows: bool = False, stats: dict | None = None) -> list[dict]:
    """Records from .jsonl/.json/.parquet/.csv, or `hf:NAME[:SPLIT]` through `datasets` (online).
    A malformed line is an error naming file and line, or with skip_bad_rows a counted skip."""
    spec = str(path)
    if spec.startswith("hf:"):
        return _read_hub(spec[3:])
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        import csv
        import io

        return list(csv.DictReader(io.StringIO(_utf8(path.read_bytes(), path), newline="")))
    if suffix == ".json":
        try:
            data = json.loads(_utf8(path.read_bytes(), path))
        except ValueError as e:
            raise LmlabError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, list):
            raise LmlabError(f"{path}: a .json data file must hold a list of records")
        return data
    records, bad, offset = [], 0, 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            try:
                line = _utf8(raw, path, start, n)
            except LmlabError:
                if not skip_bad_rows:
                    raise
                bad += 1
                continue
            if n == 1:
                line = line.removeprefix("\ufeff")  # a byte order mark some editors write
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("a line must be a JSON object")
            except ValueError as e:
                if not skip_bad_rows:
                    raise LmlabError(f"{path}:{n}: malformed JSON line ({e}); fix it or pass --skip-bad-rows") from None
                bad += 1
                continue
            rec["_where"] = f"{path}:{n}"
            records.append(rec)
    if stats is not None:
        stats["skipped_rows"] = stats.get("skipped_rows", 0) + bad
    return records


def _utf8(data: bytes, path: Path, start: int = 0, line: int | None = None) -> str:
    """`data` (read from `path` at byte `start`) as text; not UTF-8: an error naming file, line and
    byte offset, where a traceback inside the JSON reader would name neither."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"{path}:{line}" if line is not None else str(path)
        raise LmlabError(f"{where}: not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {start + e.start} "
                         f"({e.reason}); re-encode the file as UTF-8"
                         + ("" if line is None else " or pass --skip-bad-rows")) from None


def _read_hub(spec: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise LmlabError("hf: datasets need the `datasets` package (pip install datasets)") from None
    name, _, split = spec.partition(":")
    return list(datasets.load_dataset(name, split=split or "train"))


# ---- records -> chat messages -------------------------------------------------------------------

def to_messages(rec: dict) -> list[dict]:
    """Any supported record as a list of chat messages (the last one the assistant's)."""
    where = rec.get("_where", "record")
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in msgs):
            raise LmlabError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        if not any(m["role"] == "assistant" for m in msgs):
            raise LmlabError(f"{where}: no assistant turn to learn from")
        return msgs
    if "prompt" in rec and "completion" in rec:
        prompt, answer = rec["prompt"], rec["completion"]
    elif "instruction" in rec and "output" in rec:
        prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
        answer = rec["output"]
    else:
        keys = ", ".join(k for k in rec if k != "_where")
        raise LmlabError(f"{where}: unknown record format (keys: {keys}); expected prompt/completion, "
                         "messages, or instruction/input/output")
    if not isinstance(prompt, str) or not isinstance(answer, str) or not answer.strip():
        raise LmlabError(f"{where}: prompt and completion must be strings and the completion non-empty")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


@dataclass
class Example:
    ids: list[int]
    labels: list[int]  # = ids where the loss applies, IGNORE elsewhere


def tokenize_chat(messages: list[dict], tokenizer, max_length: int, chat_template: bool = True) -> Example:
    """Ids with labels on assistant turns. The conversation is rendered turn by turn and each
    new piece tokenised on its own, so the label boundaries are exact."""
    ids, labels = [], []
    if chat_template and tokenizer.chat_template:
        prev = ""
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                head = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
                piece = head[len(prev):]
                ids += tokenizer.encode(piece, add_special_tokens=False)
                prev = head
            text = tokenizer.apply_chat_template(messages[:i + 1], add_generation_prompt=False)
            if not text.startswith(prev):
                raise LmlabError("the chat template rewrites earlier turns, so assistant turns cannot be "
                                 "labelled exactly; train on raw text instead (chat_template: false)")
            piece = tokenizer.encode(text[len(prev):], add_special_tokens=False)
            ids += piece
            labels += [IGNORE] * (len(ids) - len(labels) - len(piece))
            labels += piece if m["role"] == "assistant" else [IGNORE] * len(piece)
            prev = text
    else:  # raw text: prompt then completion then EOS, loss on the completion and EOS
        ids = tokenizer.encode("".join(m["content"] for m in messages[:-1]))
        answer = tokenizer.encode(messages[-1]["content"], add_special_tokens=False)
        if tokenizer.eos_token_id is not None:
            answer.append(tokenizer.eos_token_id)
        labels = [IGNORE] * len(ids) + answer
        ids = ids + answer
    return Example(ids[:max_length], labels[:max_length])


def tokenize_records(records: list[dict], tokenizer, max_length: int, chat_template: bool = True,
                     cache_key: str | None = None) -> list[Example]:
    """Tokenise once: results are cached under $LMLAB_HOME/cache/tokenized by content hash."""
    cache = None
    if cache_key is not None:
        h = hashlib.sha256(json.dumps([cache_key, max_length, chat_template, records],
                                      sort_keys=True, default=str).encode()).hexdigest()[:24]
        cache = _cache_dir() / f"{h}.pt"
        if cache.is_file():
            return [Example(i, l) for i, l in torch.load(cache, weights_only=True)]
    from tqdm import tqdm

    out = [tokenize_chat(to_messages(r), tokenizer, max_length, chat_template)
           for r in tqdm(records, desc="tokenising", unit="ex", disable=len(records) < 500, leave=False)]
    out = [e for e in out if any(l != IGNORE for l in e.labels[1:])]  # nothing left to learn once truncated
    if cache is not None:
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save([(e.ids, e.labels) for e in out], tmp)
        os.replace(tmp, cache)
    return out


def _cache_dir() -> Path:
    d = Path(os.environ.get("LMLAB_HOME", Path.home() / ".cache" / "lmlab")) / "cache" / "tokenized"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- batching -----------------------------------------------------------------------------------

def length_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar lengths: sort within windows of 64 batches, then shuffle the
    batches. Deterministic in (seed, epoch), which is what makes resuming exact."""
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 64
    batches = []
    for s in range(0, len(order), window):
        chunk = sorted(order[s:s + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pad_batch(examples: list[Example], pad_id: int) -> dict:
    """Right-padded ids/labels; causal attention never looks right, so padding needs no mask."""
    T = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
    return {"ids": ids, "labels": labels, "tokens": sum(len(e.ids) for e in examples)}


def pack_batch(examples: list[Example], pad_id: int, row_length: int) -> dict:
    """Examples concatenated into rows of `row_length` with segment ids and restarting positions."""
    rows, row = [], []
    for e in examples:
        if row and sum(len(x.ids) for x in row) + len(e.ids) > row_length:
            rows.append(row)
            row = []
        row.append(e)
    rows.append(row)
    T = max(sum(len(x.ids) for x in r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    segments = torch.full((len(rows), T), -1, dtype=torch.long)
    positions = torch.zeros((len(rows), T), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for s, e in enumerate(row):
            n = len(e.ids)
            ids[r, at:at + n] = torch.tensor(e.ids)
            labels[r, at:at + n] = torch.tensor(e.labels)
            segments[r, at:at + n] = s
            positions[r, at:at + n] = torch.arange(n)
            at += n
    return {"ids": ids, "labels": labels, "segments": segments, "positions": positions,
            "tokens": sum(len(e.ids) for e in examples)}
