"""Tasks: what to ask, what counts as right. Built-in tasks and user YAML tasks are the same
`Task` dataclass, with prompts written as Jinja templates over a record's fields (as
lm-evaluation-harness writes `doc_to_text` / `doc_to_choice` / `doc_to_target`).

A built-in may add a `prepare` function that turns a raw record (e.g. HF HellaSwag with
ctx_a/ctx_b, ARC's nested choices) into the fields its templates use.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, fields as dc_fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

from lmlab.errors import LmlabError
from lmlab.eval.data import Record, bad, load_records

KINDS = ("multiple_choice", "generate", "perplexity", "humaneval")
MC_METRICS = ("acc", "acc_norm", "acc_bytes")
GEN_METRICS = ("exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "embedding")
PPL_METRICS = ("token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


@dataclass
class Task:
    name: str
    kind: str  # one of KINDS
    text: str = "{{question}}"  # the prompt for one item (Jinja)
    choices: str | list | None = None  # a field name, a Jinja expression giving a list, or a list
    target: str = "{{label}}"  # multiple choice: index or text of the right choice; generate: the answer
    fewshot_target: str | None = None  # what follows a demonstration's prompt (default: the target)
    cot_target: str | None = None  # the same with the reasoning (--cot)
    description: str = ""  # Jinja, before everything (lm-eval's description)
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    metrics: list[str] = field(default_factory=list)
    until: list[str] = field(default_factory=list)  # stop strings for generation
    max_tokens: int = 256
    answer: str | dict = "none"  # answer extraction: none | first_number | last_number | gsm8k | {regex: ...}
    data: str | None = None  # default data source (YAML tasks); --data overrides
    split: str | None = None  # hub datasets only
    text_field: str = "text"  # perplexity: the field holding the text
    prepare: Callable[[Record], dict] | None = None  # raw record -> template fields (built-ins)
    loader: Callable[[str, str | None], list[Record]] | None = None  # custom layouts (MMLU)
    fewshot_loader: Callable[[str], list[Record] | None] | None = None  # a separate demonstration pool
    fewshot_sampler: str = "random"  # random (seeded) | first_n (the pool's first K of the same group)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise LmlabError(f"task {self.name!r}: type must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.metrics:
            self.metrics = list({"multiple_choice": ("acc", "acc_norm"), "generate": ("exact_match",),
                                 "perplexity": PPL_METRICS, "humaneval": ("pass@1",)}[self.kind])
        allowed = {"multiple_choice": MC_METRICS, "generate": GEN_METRICS, "perplexity": PPL_METRICS}.get(self.kind)
        for m in self.metrics if allowed else []:
            if m not in allowed:
                raise LmlabError(f"task {self.name!r}: unknown metric {m!r} for {self.kind}; "
                                 f"choose from {', '.join(allowed)}")
        if self.kind == "multiple_choice" and self.choices is None:
            raise LmlabError(f"task {self.name!r}: a multiple-choice task needs `choices`")


# ---- items: a record checked and rendered ------------------------------------------------------

@dataclass
class Item:
    doc_id: int
    record: Record
    fields: dict
    text: str  # the prompt for this item alone (no description, no demonstrations)
    choices: list[str] | None = None
    gold: int | None = None
    target: str = ""


def make_items(task: Task, records: list[Record]) -> list[Item]:
    return [make_item(task, i, r) for i, r in enumerate(records)]


def make_item(task: Task, doc_id: int, rec: Record) -> Item:
    f = task.prepare(rec) if task.prepare else rec.fields
    if task.kind == "perplexity":
        text = f.get(task.text_field)
        if not isinstance(text, str):
            raise bad(rec, f"missing text field {task.text_field!r}")
        return Item(doc_id, rec, f, text)
    text = render(task.text, f, rec)
    if task.kind != "multiple_choice":
        return Item(doc_id, rec, f, text, target=render(task.target, f, rec))
    choices = render_list(task.choices, f, rec)
    if not choices:
        raise bad(rec, "empty choice list")
    for c in choices:
        if not isinstance(c, str) or not c:
            raise bad(rec, f"choices must be non-empty strings, got {c!r}")
    return Item(doc_id, rec, f, text, choices, gold_index(render(task.target, f, rec), choices, rec))


def gold_index(target: str, choices: list[str], rec: Record) -> int:
    """The right choice from a rendered target: an index ("2") or the choice's text."""
    t = target.strip()
    if re.fullmatch(r"-?\d+", t):
        i = int(t)
        if not 0 <= i < len(choices):
            raise bad(rec, f"label {i} out of range for {len(choices)} choices")
        return i
    if target in choices:
        return choices.index(target)
    if t in choices:
        return choices.index(t)
    raise bad(rec, f"label {target!r} is neither an index nor one of the choices {choices!r}")


# ---- templates -------------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _template(source: str):
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise LmlabError(f"template {source!r} does not parse: {e}") from None


def render(source: str, fields: dict, rec: Record | None = None) -> str:
    import jinja2

    try:
        return _template(source).render(**fields)
    except jinja2.UndefinedError as e:
        where = f"{rec.where}: " if rec else ""
        raise LmlabError(f"{where}missing field: {e.message} (template {source!r})") from None
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        where = f"{rec.where}: " if rec else ""
        raise LmlabError(f"{where}template {source!r} failed: {type(e).__name__}: {e}") from None


def render_list(spec, fields: dict, rec: Record) -> list:
    """choices: a list (each entry a template), a field name, or a template rendering a list."""
    if isinstance(spec, list):
        return [render(str(s), fields, rec) for s in spec]
    if spec in fields:
        value = fields[spec]
    elif re.fullmatch(r"\w+", spec):
        raise bad(rec, f"missing field {spec!r}")
    else:
        value = render(spec, fields, rec)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise bad(rec, f"choices template {spec!r} did not give a list: {value[:80]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise bad(rec, f"choices must be a list, got {type(value).__name__}")
    return list(value)


# ---- built-in tasks --------------------------------------------------------------------------

def _need(rec: Record, f: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in f]
    if missing:
        raise bad(rec, f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")


def _hellaswag_text(text: str) -> str:
    # lm-eval's hellaswag preprocess (the raw dataset carries WikiHow markers like "[title]").
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def prepare_hellaswag(rec: Record) -> dict:
    f = rec.fields
    if "ctx" in f:  # the plain-text layout of ../shared/data: used exactly as written
        _need(rec, f, "ctx", "endings", "label")
        return f
    _need(rec, f, "activity_label", "ctx_a", "ctx_b", "endings", "label")
    ctx = f["ctx_a"] + " " + f["ctx_b"].capitalize()
    return {**f, "ctx": _hellaswag_text(f["activity_label"] + ": " + ctx),
            "endings": [_hellaswag_text(e) for e in f["endings"]]}


def prepare_arc(rec: Record) -> dict:
    """HF ai2_arc rows ({question, choices: {text, label}, answerKey}) or AI2's own JSONL
    ({question: {stem, choices: [{text, label}]}, answerKey})."""
    f = rec.fields
    _need(rec, f, "question", "answerKey")
    q = f["question"]
    if isinstance(q, dict):
        _need(rec, q, "stem", "choices")
        question, texts, labels = q["stem"], [c["text"] for c in q["choices"]], [c["label"] for c in q["choices"]]
    else:
        _need(rec, f, "choices")
        question, texts, labels = q, list(f["choices"]["text"]), list(f["choices"]["label"])
    key = str(f["answerKey"]).strip()
    if key not in labels:
        raise bad(rec, f"answerKey {key!r} is not one of the choice labels {labels}")
    return {**f, "question": question, "choices": texts, "label": labels.index(key)}


_CALC = re.compile(r"<<[^>]*>>")


def prepare_gsm8k(rec: Record) -> dict:
    f = rec.fields
    _need(rec, f, "question", "answer")
    reasoning, sep, number = f["answer"].rpartition("####")
    if not sep:
        raise bad(rec, "answer has no '#### <number>' line")
    # Calculator annotations (<<3*4=12>>) are GSM8K's training aid, not reasoning text.
    reasoning = " ".join(line.strip() for line in _CALC.sub("", reasoning).splitlines() if line.strip())
    return {**f, "reasoning": reasoning, "answer_number": number.strip().replace(",", "")}


MMLU_LETTER = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
               "D. {{choices[3]}}\nAnswer:")
MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {{subject_name}}.\n\n"


def _mmlu_rows(path: Path, subject: str) -> list[Record]:
    out = []
    for r in load_records(path, csv_header=False):
        cells = [r.fields[str(i)] for i in range(len(r.fields))]
        if len(cells) != 6:
            raise bad(r, f"an MMLU row has 6 columns (question, A, B, C, D, answer), got {len(cells)}")
        answer = cells[5].strip().upper()
        if answer not in ("A", "B", "C", "D"):
            raise bad(r, f"answer must be A, B, C or D, got {cells[5]!r}")
        fields = {"question": cells[0], "choices": cells[1:5], "label": "ABCD".index(answer),
                  "subject": subject, "subject_name": subject.replace("_", " ")}
        out.append(Record(fields, r.where, group=subject))
    return out


def _mmlu_files(source: str, split: str) -> list[tuple[Path, str]]:
    """MMLU's layout: DIR/{dev,val,test}/<subject>_<split>.csv (no header), or one such CSV."""
    p = Path(source).expanduser()
    if p.is_file():
        return [(p, re.sub(rf"_({split}|dev|val|test)$", "", p.stem))]
    folder = p / split if (p / split).is_dir() else p
    files = sorted(folder.glob(f"*_{split}.csv"))
    return [(f, f.stem[: -len(split) - 1]) for f in files]


def load_mmlu(source: str, split: str | None = None) -> list[Record]:
    split = split or "test"
    files = _mmlu_files(source, split)
    if not files:
        raise LmlabError(f"{source}: no MMLU files (expected DIR/{split}/<subject>_{split}.csv or a CSV file)")
    return [r for f, subject in files for r in _mmlu_rows(f, subject)]


def mmlu_fewshot_pool(source: str) -> list[Record] | None:
    """The dev split (five examples per subject), as lm-eval uses for MMLU's demonstrations."""
    p = Path(source).expanduser()
    root = p.parent.parent if p.is_file() and p.parent.name == "test" else p.parent if p.is_file() else p
    files = sorted((root / "dev").glob("*_dev.csv")) if (root / "dev").is_dir() else sorted(root.glob("*_dev.csv"))
    return [r for f in files for r in _mmlu_rows(f, f.stem[:-4])] or None


def builtin(name: str, fmt: str | None = None) -> Task:
    """hellaswag | arc | mmlu (fmt letter|cloze) | gsm8k | perplexity | humaneval."""
    if name == "hellaswag":
        return Task("hellaswag", "multiple_choice", text="{{ctx}}", choices="endings", target="{{label}}",
                    metrics=["acc", "acc_norm"], prepare=prepare_hellaswag, split="validation")
    if name in ("arc", "arc_easy", "arc_challenge"):
        return Task(name, "multiple_choice", text="Question: {{question}}\nAnswer:", choices="choices",
                    target="{{label}}", metrics=["acc", "acc_norm"], prepare=prepare_arc)
    if name == "mmlu":
        fmt = fmt or "letter"
        if fmt not in ("letter", "cloze"):
            raise LmlabError(f"mmlu format must be letter or cloze, got {fmt!r}")
        letter = fmt == "letter"
        cloze = "Question: {{question.strip()}}\nAnswer:"
        return Task("mmlu", "multiple_choice", text=MMLU_LETTER if letter else cloze,
                    choices=["A", "B", "C", "D"] if letter else "choices", target="{{label}}",
                    description=MMLU_DESCRIPTION, metrics=["acc"] if letter else ["acc", "acc_norm"],
                    loader=load_mmlu, fewshot_loader=mmlu_fewshot_pool, fewshot_sampler="first_n")
    if name == "gsm8k":
        return Task("gsm8k", "generate", text="Question: {{question}}\nAnswer:", target="{{answer_number}}",
                    fewshot_target="{{answer_number}}",
                    cot_target="{{reasoning}} The answer is {{answer_number}}.",
                    until=["Question:", "</s>", "<|im_end|>", "\n\n"], max_tokens=256, answer="gsm8k",
                    metrics=["exact_match"], prepare=prepare_gsm8k)
    if name in ("perplexity", "ppl"):
        return Task("perplexity", "perplexity")
    if name == "humaneval":
        return Task("humaneval", "humaneval")
    raise LmlabError(f"unknown task {name!r}: built-ins are {', '.join(BUILTINS)}, or give a task YAML file")


BUILTINS = ("hellaswag", "mmlu", "arc", "gsm8k", "perplexity", "humaneval")


# ---- YAML tasks ------------------------------------------------------------------------------

def load_task_yaml(path: str | Path) -> Task:
    """A user task without Python. Keys are Task's fields; `type` is the kind, `prompt` (or
    `prompt_file`) the prompt template, and `data` is relative to the YAML file."""
    import yaml

    path = Path(path).expanduser()
    try:
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise LmlabError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(spec, dict):
        raise LmlabError(f"{path}: a task file is a YAML mapping (name, type, data, prompt, ...)")
    spec = dict(spec)
    spec.setdefault("name", path.stem)
    if "type" in spec:
        spec["kind"] = spec.pop("type")
    if "prompt" in spec:
        spec["text"] = spec.pop("prompt")
    if "prompt_file" in spec:
        spec["text"] = (path.parent / spec.pop("prompt_file")).read_text(encoding="utf-8")
    if "metric" in spec:
        spec["metrics"] = spec.pop("metric")
    if isinstance(spec.get("metrics"), str):
        spec["metrics"] = [spec["metrics"]]
    if isinstance(spec.get("until"), str):
        spec["until"] = [spec["until"]]
    if spec.get("data") and not str(spec["data"]).startswith("hf:"):
        spec["data"] = str((path.parent / str(spec["data"])).expanduser())
    known = {f.name for f in dc_fields(Task)} - {"prepare", "loader", "fewshot_loader"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise LmlabError(f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"known: type, prompt, prompt_file, {', '.join(sorted(known - {'kind', 'text'}))}")
    if "kind" not in spec:
        raise LmlabError(f"{path}: missing `type` (multiple_choice, generate or perplexity)")
    try:
        return Task(**spec)
    except LmlabError as e:
        raise LmlabError(f"{path}: {e}") from None


@lru_cache(maxsize=1)
def _yaml_loader():
    """YAML 1.2 booleans: `choices: [yes, no]` means the words, not True and False."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return Loader


def get_task(spec: str, fmt: str | None = None) -> Task:
    """A built-in name or a YAML file."""
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return load_task_yaml(spec)
    return builtin(spec, fmt)


def with_prompt(task: Task, template_file: str | None) -> Task:
    """--prompt-template FILE: the task with its prompt template read from a file."""
    if not template_file:
        return task
    p = Path(template_file).expanduser()
    if not p.is_file():
        raise LmlabError(f"{template_file}: no such prompt template file")
    return replace(task, text=p.read_text(encoding="utf-8").rstrip("\n"))
