"""Decontamination: training documents that share a word 13-gram with an evaluation item.

The n-gram test is GPT-3's (Brown et al. 2020, appendix C) and Llama's: text lowercased, punctuation
dropped, split into words; an item shorter than 13 words counts as one n-gram of all its words.
The evaluation data are any file `lmlab eval` reads: HellaSwag, GSM8K and HumanEval JSONL, MMLU
CSV files or folders, task YAML files (their `data`), or any JSONL/JSON/CSV/Parquet; every text
field of an item contributes n-grams. Each item has an id (its `task_id`/`id` field, else
"<benchmark>:<index>"), and each contaminated document records the ids it matched, so the report
says which benchmark items leaked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from lmlab.config import option
from lmlab.data.dedup import _hash_words, simplify
from lmlab.errors import LmlabError


@dataclass
class DecontaminateConfig:
    enabled: bool = option(True, "drop (or flag) documents sharing an n-gram with evaluation data")
    files: list[str] = option(help="evaluation files (any file lmlab eval reads)", factory=list, flag=False)
    ngram: int = option(13, "words per n-gram")
    action: Literal["remove", "flag"] = option("remove", "remove contaminated documents, or keep them with a "
                                                         "`contamination` field listing the items")


@dataclass
class Item:
    id: str
    where: str
    texts: list[str]


_ID_FIELDS = ("task_id", "id", "question_id", "ind", "qid")


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _name(path: Path, fields: dict) -> str:
    if "ctx" in fields and "endings" in fields or "activity_label" in fields:
        return "hellaswag"
    if "question" in fields and isinstance(fields.get("answer"), str) and "####" in fields["answer"]:
        return "gsm8k"
    if "canonical_solution" in fields:
        return "humaneval"
    return path.stem


def load_items(path: str | Path) -> list[Item]:
    """The items of one evaluation file, each with an id and its text fields."""
    from lmlab.eval.data import load_records
    from lmlab.eval.tasks import load_mmlu, load_task_yaml

    p = Path(path).expanduser()
    if not p.exists():
        raise LmlabError(f"{path}: no such evaluation file (--decontaminate takes files lmlab eval reads)")
    if p.suffix.lower() in (".yaml", ".yml"):
        task = load_task_yaml(p)
        if not task.data:
            raise LmlabError(f"{p}: this task has no `data` to decontaminate against")
        recs = load_records(task.data, task.split)
        name = task.name
    elif p.is_dir() or p.suffix.lower() == ".csv":
        recs, name = load_mmlu(str(p)), "mmlu"
    else:
        recs = load_records(p)
        name = _name(p, recs[0].fields) if recs else p.stem
    items = []
    for i, r in enumerate(recs):
        f = r.fields
        ident = next((str(f[k]) for k in _ID_FIELDS if k in f and f[k] not in (None, "")), None)
        if name == "mmlu":
            ident = f"mmlu/{r.group}:{sum(1 for x in items if x.id.startswith(f'mmlu/{r.group}:'))}"
        items.append(Item(ident if ident and name.lower() in ident.lower() else f"{name}:{ident or i}", r.where,
                          _strings({k: v for k, v in f.items() if k not in _ID_FIELDS})))
    return items


def item_ngrams(texts: list[str], n: int) -> np.ndarray:
    import numpy as np

    from lmlab.data.dedup import _combine

    ws = [w for t in texts for w in simplify(t)]
    return _combine(_hash_words(ws), n) if ws else np.empty(0, dtype=np.uint64)


class Index:
    """Sorted n-gram hashes of every item, and which item each belongs to."""

    def __init__(self, files: tuple[str, ...], n: int):
        import numpy as np

        self.items = [it for f in files for it in load_items(f)]
        keys, owners = [], []
        for j, it in enumerate(self.items):
            g = item_ngrams(it.texts, n)
            keys.append(g)
            owners.append(np.full(len(g), j, dtype=np.int64))
        k = np.concatenate(keys) if keys else np.empty(0, dtype=np.uint64)
        o = np.concatenate(owners) if owners else np.empty(0, dtype=np.int64)
        order = np.argsort(k, kind="stable")
        self.keys, self.owners, self.n = k[order], o[order], n

    def match(self, text: str) -> list[str]:
        """Ids of the items sharing an n-gram with `text`."""
        if not len(self.keys):
            return []
        import numpy as np

        from lmlab.data.dedup import _combine

        ws = simplify(text)
        if not ws:
            return []
        g = np.unique(_combine(_hash_words(ws), self.n))
        lo = np.searchsorted(self.keys, g, side="left")
        hi = np.searchsorted(self.keys, g, side="right")
        hit = np.flatnonzero(hi > lo)
        if not len(hit):
            return []
        owners = {int(o) for i in hit for o in self.owners[lo[i]:hi[i]]}
        return sorted(self.items[o].id for o in owners)


@lru_cache(maxsize=4)
def index(files: tuple[str, ...], n: int) -> Index:
    return Index(files, n)


def decontaminate(batch: list[dict], cfg: DecontaminateConfig):
    if not cfg.files:
        return batch, []
    idx = index(tuple(cfg.files), cfg.ngram)
    kept, removed = [], []
    for r in batch:
        leaked = idx.match(r["text"])
        if not leaked:
            kept.append(r)
        elif cfg.action == "flag":
            kept.append({**r, "contamination": leaked})
        else:
            removed.append(({**r, "_leaked": leaked}, f"{cfg.ngram}-gram overlap with {', '.join(leaked[:5])}"
                            + (f" (+{len(leaked) - 5})" if len(leaked) > 5 else "")))
    return kept, removed
