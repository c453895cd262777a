"""Ratings from battles, as Chatbot Arena computes them.

Bradley-Terry by maximum likelihood: P(a beats b) = 1 / (1 + 10^((R_b - R_a) / 400)); a tie is
half a win for each side (the Arena's duplicated-rows logistic regression: one copy of a tie
counts for a, the other for b). The logistic regression has no intercept and no penalty, so only
differences are identified; the Arena's solver starts at zero and ends with mean zero, hence
ratings = 1000 + 400 * coefficient, averaging 1000. We fit the same likelihood by Newton's
method on the win-count matrix (each round is a few p x p solves, whatever the number of
battles), and bootstrap by resampling battles with replacement: a multinomial draw over the
(pair, outcome) cells, which has the same distribution as resampling rows.

Ranks: 1 + the number of models whose lower bound is above this model's upper bound.
Online Elo (K=4, in battle order) is reported beside it, to show its order dependence.
Style control: the same fit with standardised style features of each battle (answer length,
headers, list items, bold spans: (a - b) / (a + b) per feature, as the Arena's), so a model's
rating is what is left after style is accounted for.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError

SCALE, BASE, INIT_RATING = 400.0, 10.0, 1000.0
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
K = SCALE / math.log(BASE)  # rating points per unit of natural-log odds


def read_battles(path: str | Path) -> list[dict]:
    from lmlab.judge.data import read_jsonl

    out = []
    for n, r in read_jsonl(path):
        missing = [k for k in ("model_a", "model_b", "winner") if k not in r]
        if missing:
            raise LmlabError(f"{path}:{n}: a battle needs {', '.join(missing)}")
        if r["winner"] not in WINNERS + ("error",):
            raise LmlabError(f"{path}:{n}: winner {r['winner']!r} is not one of {', '.join(WINNERS)}")
        if r["model_a"] == r["model_b"]:
            raise LmlabError(f"{path}:{n}: a model cannot battle itself ({r['model_a']!r})")
        out.append(r)
    return out


def _encode(battles: list[dict]):
    battles = [b for b in battles if b["winner"] != "error"]  # parse failures are no outcome
    if not battles:
        raise LmlabError("no battles with an outcome")
    models = sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})
    ix = {m: i for i, m in enumerate(models)}
    a = np.array([ix[b["model_a"]] for b in battles])
    b_ = np.array([ix[b["model_b"]] for b in battles])
    y = np.array([{"model_a": 1.0, "model_b": 0.0}.get(b["winner"], 0.5) for b in battles])
    return models, a, b_, y, battles


def _win_matrices(a, b, y, p, weights=None):
    w = np.ones(len(a)) if weights is None else weights
    W = np.zeros((p, p))
    N = np.zeros((p, p))
    np.add.at(W, (a, b), w * y)
    np.add.at(W, (b, a), w * (1 - y))
    np.add.at(N, (a, b), w)
    np.add.at(N, (b, a), w)
    return W, N


def fit_bt(W: np.ndarray, N: np.ndarray, iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Mean-zero log-odds strengths u (P(i beats j) = sigmoid(u_i - u_j)) maximising the
    likelihood of win credits W[..., i, j] in N[..., i, j] games. Batched over leading axes."""
    W, N = np.asarray(W, float), np.asarray(N, float)
    p = W.shape[-1]
    u = np.zeros(W.shape[:-1])
    J = np.ones((p, p)) / p  # pins the free mean (the likelihood is flat along all-ones)
    eye = 1e-9 * np.eye(p)
    for _ in range(iters):
        s = 1 / (1 + np.exp(-(u[..., :, None] - u[..., None, :])))
        g = (W - N * s).sum(-1)
        v = N * s * (1 - s)
        M = np.eye(p) * v.sum(-1)[..., None, :] - v  # minus the Hessian
        step = np.linalg.solve(M + J + eye, g[..., None])[..., 0]
        step = np.clip(step, -5, 5)  # a model that never loses drifts off instead of overflowing
        u = u + step
        u = u - u.mean(-1, keepdims=True)
        if np.abs(step).max() < tol:
            break
    return u


def bradley_terry(battles: list[dict]) -> dict[str, float]:
    models, a, b, y, _ = _encode(battles)
    W, N = _win_matrices(a, b, y, len(models))
    return dict(zip(models, (INIT_RATING + K * fit_bt(W, N)).tolist()))


def online_elo(battles: list[dict], k: float = 4.0) -> dict[str, float]:
    r: dict[str, float] = {}
    for b in battles:
        if b["winner"] == "error":
            continue
        ra, rb = r.setdefault(b["model_a"], INIT_RATING), r.setdefault(b["model_b"], INIT_RATING)
        ea = 1 / (1 + BASE ** ((rb - ra) / SCALE))
        sa = {"model_a": 1.0, "model_b": 0.0}.get(b["winner"], 0.5)
        r[b["model_a"]] = ra + k * (sa - ea)
        r[b["model_b"]] = rb + k * (ea - sa)
    return r


def _bootstrap_bt(a, b, y, p, rounds: int, seed: int) -> np.ndarray:
    """rounds x p ratings, battles resampled with replacement (as cell counts)."""
    cell = (a * p + b) * 3 + np.round(y * 2).astype(int)  # y in {0, .5, 1} -> 0, 1, 2
    cells, counts = np.unique(cell, return_inverse=False, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(a), counts / counts.sum(), size=rounds)  # rounds x cells
    ca, cb, cy = cells // 3 // p, cells // 3 % p, (cells % 3) / 2
    W = np.zeros((rounds, p, p))
    N = np.zeros((rounds, p, p))
    for j in range(len(cells)):
        W[:, ca[j], cb[j]] += draws[:, j] * cy[j]
        W[:, cb[j], ca[j]] += draws[:, j] * (1 - cy[j])
        N[:, ca[j], cb[j]] += draws[:, j]
        N[:, cb[j], ca[j]] += draws[:, j]
    return INIT_RATING + K * fit_bt(W, N)


def ranks(lower: dict, upper: dict) -> dict[str, int]:
    return {m: 1 + sum(lower[o] > upper[m] for o in lower if o != m) for m in lower}


def ratings(battles: list[dict], bootstrap: int = 1000, seed: int = 0, style: bool = False) -> dict:
    """{"ratings": {model: {rating, lower, upper, rank, elo, battles}}, "style_control": ... if style}."""
    models, a, b, y, kept = _encode(battles)
    p = len(models)
    W, N = _win_matrices(a, b, y, p)
    point = INIT_RATING + K * fit_bt(W, N)
    if bootstrap:
        boot = _bootstrap_bt(a, b, y, p, bootstrap, seed)
        lo, hi = np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)
    else:
        lo = hi = point
    lower, upper = dict(zip(models, lo.tolist())), dict(zip(models, hi.tolist()))
    rk = ranks(lower, upper)
    elo = online_elo(kept)
    games = N.sum(1)
    out = {"ratings": {m: {"rating": float(point[i]), "lower": lower[m], "upper": upper[m], "rank": rk[m],
                           "elo": elo[m], "battles": int(games[i])} for i, m in enumerate(models)},
           "n_battles": len(kept), "bootstrap": bootstrap,
           "ties": int((y == 0.5).sum())}
    if style:
        out["style_control"] = style_controlled(kept, bootstrap=bootstrap, seed=seed)
    return out


# ---- style control ---------------------------------------------------------------------------

def style_counts(text: str) -> np.ndarray:
    """[length in characters, markdown headers, list items, bold spans]."""
    lines = text.splitlines()
    return np.array([len(text),
                     sum(bool(re.match(r"^#{1,6}\s", ln)) for ln in lines),
                     sum(bool(re.match(r"^\s*([-*+]|\d+\.)\s", ln)) for ln in lines),
                     len(re.findall(r"\*\*[^*\n]+\*\*|__[^_\n]+__", text))], dtype=float)


def _battle_style(b: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    meta = b.get("conv_metadata")
    if meta:  # Chatbot Arena's published battles carry these counts
        def side(s):
            return np.array([meta[f"sum_assistant_{s}_tokens"], sum(meta[f"header_count_{s}"].values()),
                             sum(meta[f"list_count_{s}"].values()), sum(meta[f"bold_count_{s}"].values())], float)
        return side("a"), side("b")
    if "output_a" in b and "output_b" in b:
        return style_counts(b["output_a"]), style_counts(b["output_b"])
    raise LmlabError(f"battle {n}: style control needs the answers (output_a, output_b) or conv_metadata")


STYLE_FEATURES = ("length", "headers", "lists", "bold")


def style_features(battles: list[dict]) -> np.ndarray:
    sa, sb = zip(*(_battle_style(b, i + 1) for i, b in enumerate(battles)))
    sa, sb = np.array(sa), np.array(sb)
    tot = sa + sb
    diff = np.divide(sa - sb, tot, out=np.zeros_like(tot), where=tot > 0)
    sd = diff.std(0)
    return (diff - diff.mean(0)) / np.where(sd > 0, sd, 1.0)


def _fit_rows(X: np.ndarray, y: np.ndarray, p: int, w: np.ndarray | None = None, iters: int = 50) -> np.ndarray:
    """Logistic regression without intercept on soft targets; the first p coefficients (models)
    are pinned to mean zero."""
    w = np.ones(len(y)) if w is None else w
    d = X.shape[1]
    beta = np.zeros(d)
    pin = np.zeros((d, d))
    pin[:p, :p] = 1.0 / p
    for _ in range(iters):
        s = 1 / (1 + np.exp(-X @ beta))
        g = X.T @ (w * (y - s))
        M = (X * (w * s * (1 - s))[:, None]).T @ X
        step = np.clip(np.linalg.solve(M + pin + 1e-9 * np.eye(d), g), -5, 5)
        beta += step
        beta[:p] -= beta[:p].mean()
        if np.abs(step).max() < 1e-10:
            break
    return beta


def style_controlled(battles: list[dict], bootstrap: int = 1000, seed: int = 0) -> dict:
    models, a, b, y, kept = _encode(battles)
    p = len(models)
    X = np.zeros((len(y), p))
    X[np.arange(len(y)), a] = 1.0
    X[np.arange(len(y)), b] = -1.0
    X = np.hstack([X, style_features(kept)])
    beta = _fit_rows(X, y, p)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(bootstrap):
        w = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(float)
        boot.append(_fit_rows(X, y, p, w))
    boot = np.array(boot) if boot else beta[None]
    r = INIT_RATING + K * beta[:p]
    lo = INIT_RATING + K * np.percentile(boot[:, :p], 2.5, axis=0)
    hi = INIT_RATING + K * np.percentile(boot[:, :p], 97.5, axis=0)
    lower, upper = dict(zip(models, lo.tolist())), dict(zip(models, hi.tolist()))
    rk = ranks(lower, upper)
    return {"ratings": {m: {"rating": float(r[i]), "lower": lower[m], "upper": upper[m], "rank": rk[m]}
                        for i, m in enumerate(models)},
            "style_coefficients": dict(zip(STYLE_FEATURES, beta[p:].tolist()))}


def write_json(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
