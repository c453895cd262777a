"""Win rates against a baseline: raw, as AlpacaEval reports it, and length-controlled.

Annotations are AlpacaEval's rows: `output_1` (the baseline's), `output_2` (the model's),
`generator_1`, `generator_2`, `preference` in [1, 2] (1 = baseline, 2 = model, 1.5 or 0 = draw;
null = not annotated, left out). Our verdict files (grading.pairwise rows, or Arena battles with
the outputs) are turned into the same rows with `from_verdicts`.

win_rate = 100 * mean(preference - 1); standard_error = 100 * its standard error (ddof 1).
length_controlled_winrate: AlpacaEval 2's GLM, logit P(model preferred) = theta + phi *
tanh(std_delta_len), std_delta_len = (len(output_1) - len(output_2)) / std, fitted by maximum
likelihood to the soft preferences, then predicted with the length term set to zero:
100 * sigmoid(theta). AlpacaEval also has a per-instruction difficulty term estimated across
its whole leaderboard (downloaded, and regularised towards its baselines); with one model and
no such table that term is absent, so figures can differ from its leaderboard by a few points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError

FIELDS = ("output_1", "output_2", "generator_1", "generator_2", "preference")


def read_annotations(path: str | Path, baseline: str | None = None) -> list[dict]:
    """AlpacaEval's annotations.json (a JSON list), or a JSONL verdict / battle file."""
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise LmlabError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
        for i, r in enumerate(rows):
            missing = [k for k in FIELDS if not isinstance(r, dict) or k not in r]
            if missing:
                raise LmlabError(f"{path}: item {i}: an annotation needs {', '.join(missing)}")
        return rows
    from lmlab.judge.data import read_jsonl

    return from_verdicts(read_jsonl(path), baseline, where=str(path))


def from_verdicts(rows, baseline: str | None = None, where: str = "verdicts") -> list[dict]:
    """Pairwise verdict rows (model_a, model_b, winner, output_a, output_b; as (line, row) pairs or
    rows) -> AlpacaEval rows with the baseline as output_1. Parse failures ("error") are dropped."""
    rows = [r if isinstance(r, tuple) else (i + 1, r) for i, r in enumerate(rows)]
    for n, r in rows:
        missing = [k for k in ("model_a", "model_b", "winner", "output_a", "output_b") if k not in r]
        if missing:
            raise LmlabError(f"{where}:{n}: a verdict needs {', '.join(missing)}")
    models = sorted({r["model_a"] for _, r in rows} | {r["model_b"] for _, r in rows})
    if baseline is None:
        if len(models) != 2:
            raise LmlabError(f"{where}: {len(models)} models ({', '.join(models)}); name the --baseline")
        baseline = rows[0][1]["model_a"]
    if baseline not in models:
        raise LmlabError(f"{where}: baseline {baseline!r} is not among the models: {', '.join(models)}")
    out = []
    for _, r in rows:
        if baseline not in (r["model_a"], r["model_b"]) or r["winner"] == "error":
            continue
        base_is_a = r["model_a"] == baseline
        win = r["winner"]
        pref = 1.5 if win.startswith("tie") else (1.0 if (win == "model_a") == base_is_a else 2.0)
        out.append({"instruction": r.get("instruction"),
                    "output_1": r["output_a"] if base_is_a else r["output_b"],
                    "output_2": r["output_b"] if base_is_a else r["output_a"],
                    "generator_1": baseline, "generator_2": r["model_b"] if base_is_a else r["model_a"],
                    "preference": pref})
    return out


def _prefs(rows) -> tuple[np.ndarray, np.ndarray]:
    p, d = [], []
    for r in rows:
        v = r["preference"]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        v = float(v)
        p.append(1.5 if v == 0 else v)  # AlpacaEval writes some draws as 0
        d.append(len(r["output_1"]) - len(r["output_2"]))
    return np.array(p) - 1.0, np.array(d, dtype=float)


def lc_glm(y: np.ndarray, delta_len: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """(theta, phi) maximising sum y log s + (1 - y) log(1 - s), s = sigmoid(theta + phi x),
    x = tanh(delta_len / std(delta_len)), by Newton's method."""
    sd = delta_len.std(ddof=1) if len(delta_len) > 1 else 0.0
    x = np.tanh(delta_len / sd) if sd > 0 else np.zeros_like(delta_len)
    X = np.stack([np.ones_like(x), x], 1)
    w = np.zeros(2)
    for _ in range(iters):
        s = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (y - s)
        H = (X * (s * (1 - s))[:, None]).T @ X
        step = np.linalg.lstsq(H, g, rcond=None)[0]
        w += step
        if np.abs(step).max() < 1e-12:
            break
    return float(w[0]), float(w[1])


def win_rates(rows: list[dict]) -> dict:
    """win_rate, standard_error, length_controlled_winrate, n_total (+ n_wins, n_draws, n_wins_base)."""
    y, d = _prefs(rows)
    n = len(y)
    if n == 0:  # nothing judged (every verdict failed to parse, or none annotated): no figures
        return {"win_rate": None, "standard_error": None, "length_controlled_winrate": None, "n_total": 0,
                "n_wins": 0, "n_wins_base": 0, "n_draws": 0, "avg_length": None}
    gens = sorted({str(r["generator_2"]) for r in rows})
    same = {str(r["generator_1"]) for r in rows} == set(gens)
    theta = 0.0 if same else lc_glm(y, d)[0]
    return {"win_rate": float(100 * y.mean()),
            "standard_error": float(100 * y.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            "length_controlled_winrate": float(100 / (1 + math.exp(-theta))),
            "n_total": n, "n_wins": int((y > 0.5).sum()), "n_wins_base": int((y < 0.5).sum()),
            "n_draws": int((y == 0.5).sum()), "avg_length": float(np.mean([len(r["output_2"]) for r in rows]))}


def by_generator(rows: list[dict]) -> dict[str, dict]:
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(str(r["generator_2"]), []).append(r)
    return {g: win_rates(rs) for g, rs in groups.items()}
