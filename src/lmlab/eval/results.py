"""Results: metrics with standard errors, results.json, samples_<task>.jsonl, a Markdown table.

Standard errors are lm-eval's: for a mean over items, the sample standard deviation over
sqrt(n); corpus-level metrics (perplexity, BLEU, ...) report none.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def mean_stderr(xs: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mu = mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def summarize(samples: list[dict], metrics: list[str]) -> dict:
    """Per-item 0/1 (or real) scores -> {metric: mean, metric_stderr: ..., n: items}."""
    out = {}
    for m in metrics:
        xs = [float(s[m]) for s in samples if s.get(m) is not None]
        out[m] = mean(xs)
        out[f"{m}_stderr"] = mean_stderr(xs)
    out["n"] = len(samples)
    return out


def versions() -> dict:
    import lmlab

    v = {"lmlab": lmlab.__version__, "python": platform.python_version()}
    for name in ("torch", "tokenizers", "transformers", "lm_eval"):
        try:
            v[name] = __import__(name).__version__
        except Exception:  # optional packages: absent or without a version
            pass
    return v


def write(output_dir: str | Path, report: dict, samples: dict[str, list[dict]]) -> Path:
    """DIR/results.json and DIR/samples_<task>.jsonl (one line per item)."""
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=_plain) + "\n",
                                      encoding="utf-8")
    for task, rows in samples.items():
        with open(out / f"samples_{_filename(task)}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=_plain) + "\n")
    return out


def new_report(config: dict, model: dict) -> dict:
    return {"results": {}, "config": config, "model": model, "seed": config.get("seed"),
            "versions": versions(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


def markdown_table(results: dict[str, dict]) -> str:
    """| task | metric | value | stderr | n |, one row per metric (stderr columns folded in)."""
    lines = ["| task | metric | value | ± stderr | n |", "|---|---|---:|---:|---:|"]
    for task, metrics in results.items():
        for name, value in metrics.items():
            if name.endswith("_stderr") or name in ("n", "tokens", "seconds", "items_per_s") or not _number(value):
                continue
            se = metrics.get(f"{name}_stderr")
            lines.append(f"| {task} | {name} | {_fmt(value)} | {_fmt(se) if se is not None else ''} | "
                         f"{metrics.get('n', '')} |")
    return "\n".join(lines)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _filename(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task)


def _plain(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
