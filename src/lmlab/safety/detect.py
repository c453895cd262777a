"""Zero-shot detection of machine-written text from one model's view of it.

Every method needs, for each token x_t of the text, the model's next-token distribution p_t:
- likelihood: the mean log p_t(x_t) (machine text is likely under a model like its writer);
- logrank: minus the mean log rank of x_t in p_t (GLTR's observation, as a score);
- fast-detectgpt (Bao et al. 2024), the analytic sampling discrepancy with one model for
  sampling and scoring: (sum_t log p_t(x_t) - sum_t mu_t) / sqrt(sum_t s2_t), where mu_t and s2_t
  are the mean and variance of log p_t(X) for X ~ p_t: how much likelier the text is than
  text the model itself would sample, in standard deviations;
- GLTR's rank buckets (top 10 / 100 / 1000 / beyond) per token, with a coloured HTML view.

One forward pass per text; texts are sorted by length and right-padded into batches (causal
attention never reaches the padding), and the vocabulary projection runs on the real positions
only, a chunk at a time, so a batch never holds [B, T, V] logits.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmlab.errors import LmlabError

METHODS = ("fast-detectgpt", "likelihood", "logrank")
MIN_TOKENS = 16  # scored tokens below which a score says more about the text's length than its writer
# Thresholds above which a text is called machine-written when none was calibrated (--calibrate
# fits better ones for a model and domain). Text the scoring model samples at T=1 has a
# Fast-DetectGPT statistic of mean 0 and variance about 1 by construction, and human text lies
# below it; the values are the best (Youden) thresholds of `benchmarks/detect.py --quick` on the
# bundled model, SQuAD/HellaSwag against the model's own continuations.
DEFAULT_THRESHOLDS = {"fast-detectgpt": -0.6, "likelihood": -3.0, "logrank": -1.6}
GLTR_BUCKETS = (10, 100, 1000)  # GLTR's top-k edges; a fourth bucket holds the rest
GLTR_COLOURS = ("#b6f0b0", "#fff3a6", "#ffc7a6", "#e3c2ff")


@dataclass
class TokenStats:
    """Per scored token (every token but the first, which nothing predicts)."""
    ids: list[int]  # the whole text's ids
    logprob: np.ndarray  # log p_t(x_t)
    mean: np.ndarray  # E_{X~p_t} log p_t(X) (minus the entropy)
    var: np.ndarray  # Var_{X~p_t} log p_t(X)
    rank: np.ndarray  # 1 + the number of tokens likelier than x_t

    def score(self, method: str) -> float:
        if method == "fast-detectgpt":
            return float((self.logprob.sum() - self.mean.sum()) / math.sqrt(max(self.var.sum(), 1e-12)))
        if method == "likelihood":
            return float(self.logprob.mean())
        if method == "logrank":
            return float(-np.log(self.rank).mean())
        raise LmlabError(f"unknown detection method {method!r}; choose from {', '.join(METHODS)}")

    def buckets(self) -> list[int]:
        """GLTR bucket of each scored token: 0 (top 10) .. 3 (beyond the top 1000)."""
        return np.searchsorted(np.array(GLTR_BUCKETS), self.rank, side="left").tolist()


def check_method(method: str) -> str:
    if method not in METHODS:
        raise LmlabError(f"unknown detection method {method!r}; choose from {', '.join(METHODS)}")
    return method


def encode(lm, text: str, min_tokens: int = MIN_TOKENS) -> list[int]:
    if not isinstance(text, str) or not text.strip():
        raise LmlabError("empty text: nothing to score")
    ids = lm.tokenizer.encode(text)[: lm.config.max_seq_len]
    if len(ids) - 1 < min_tokens:
        raise LmlabError(f"text too short to score: {len(ids)} tokens, the detector needs at least "
                         f"{min_tokens + 1} ({text[:40]!r})")
    return ids


@torch.inference_mode()
def token_stats(lm, texts: list[str], batch_tokens: int = 4096, chunk: int = 1024, min_tokens: int = MIN_TOKENS,
                progress: bool = False) -> list[TokenStats]:
    """Per-token statistics of each text under `lm`'s model, one forward pass per text."""
    encoded = [encode(lm, t, min_tokens) for t in texts]
    model = lm.model
    dev = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    out: list[TokenStats | None] = [None] * len(encoded)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(e) for e in encoded), desc="score", unit="tok")
    start = 0
    while start < len(order):
        longest = len(encoded[order[start]])
        n = max(1, min(len(order) - start, batch_tokens // longest))
        rows = order[start:start + n]
        start += n
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(encoded[i])] = torch.tensor(encoded[i])
        h = model.hidden_states(ids.to(dev))
        # predicting positions 0..n-2 of each row, targets 1..n-1; padding never enters the head
        lens = [len(encoded[i]) for i in rows]
        valid = torch.zeros(len(rows), longest, dtype=torch.bool)
        for r, L in enumerate(lens):
            valid[r, :L - 1] = True
        hv = h[valid.to(dev)]
        targets = ids[:, 1:][valid[:, :-1]].to(dev)
        stats = [_stats(model.lm_head(hv[s:s + chunk]).float(), targets[s:s + chunk])
                 for s in range(0, len(hv), chunk)]
        lp, mean, var, rank = (torch.cat([s[k] for s in stats]).cpu().double().numpy() for k in range(4))
        at = 0
        for r, i in enumerate(rows):
            k = lens[r] - 1
            out[i] = TokenStats(encoded[i], lp[at:at + k], mean[at:at + k], var[at:at + k], rank[at:at + k])
            at += k
        if bar:
            bar.update(sum(lens))
    if bar:
        bar.close()
    return out


def _stats(logits: torch.Tensor, targets: torch.Tensor):
    logp = logits.log_softmax(-1)
    p = logp.exp()
    chosen = logp.gather(-1, targets[:, None])[:, 0]
    mean = (p * logp).sum(-1)
    var = (p * logp.square()).sum(-1) - mean.square()
    rank = (logp > chosen[:, None]).sum(-1) + 1
    return chosen, mean, var, rank


def score(lm, texts: list[str], method: str = "fast-detectgpt", threshold: float | None = None,
          **kw) -> list[dict]:
    """{"score", "method", "machine_generated"} per text (higher score = more machine-like)."""
    check_method(method)
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    return [{"score": s, "method": method, "machine_generated": s > threshold}
            for s in (st.score(method) for st in token_stats(lm, texts, **kw))]


# ---- calibration ---------------------------------------------------------------------------------

def read_labelled(path: str | Path) -> tuple[list[str], list[int]]:
    """JSONL rows {"text", "label"}: label 1 / "machine" / true for machine text, 0 / "human" / false."""
    texts, labels = [], []
    names = {"machine": 1, "ai": 1, "generated": 1, "human": 0}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            label = rec["label"]
            label = names[label.lower()] if isinstance(label, str) else int(label)
            texts.append(rec["text"])
        except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise LmlabError(f"{path}:{n}: expected {{\"text\": ..., \"label\": 0|1|\"human\"|\"machine\"}} "
                             f"({type(e).__name__}: {e})") from None
        if label not in (0, 1):
            raise LmlabError(f"{path}:{n}: label must be 0 (human) or 1 (machine), got {rec['label']!r}")
        labels.append(label)
    if len(set(labels)) < 2:
        raise LmlabError(f"{path}: calibration needs both human (0) and machine (1) texts")
    return texts, labels


def roc_summary(labels, scores, max_fpr: float = 0.01) -> dict:
    """AUROC, TPR at `max_fpr` and the threshold that maximises TPR - FPR (Youden's J)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, thr = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return {"auroc": float(roc_auc_score(labels, scores)),
            "tpr_at_1pct_fpr": float(tpr[fpr <= max_fpr].max()) if (fpr <= max_fpr).any() else 0.0,
            "threshold": float(thr[best]) if np.isfinite(thr[best]) else float(max(scores)),
            "tpr": float(tpr[best]), "fpr": float(fpr[best])}


def calibrate(lm, path: str | Path, methods=METHODS, **kw) -> dict:
    """{method: roc_summary} on a labelled JSONL file; the thresholds go to `detect --thresholds`."""
    texts, labels = read_labelled(path)
    stats = token_stats(lm, texts, **kw)
    return {m: roc_summary(labels, [s.score(m) for s in stats]) for m in methods}


# ---- GLTR view -----------------------------------------------------------------------------------

def gltr_html(lm, text: str, min_tokens: int = 1) -> str:
    """A self-contained HTML page: each token coloured by its GLTR rank bucket (title: rank, p)."""
    st = token_stats(lm, [text], min_tokens=min_tokens)[0]
    tok = lm.tokenizer
    pieces, prev, buckets = [], "", st.buckets()
    for k in range(len(st.ids)):
        full = tok.decode(st.ids[:k + 1])
        piece, prev = full[len(prev):], full
        if k == 0:
            pieces.append(f'<span title="first token (not scored)">{html.escape(piece)}</span>')
            continue
        b = buckets[k - 1]
        tip = f"rank {int(st.rank[k - 1])}, p={math.exp(st.logprob[k - 1]):.3g}"
        pieces.append(f'<span style="background:{GLTR_COLOURS[b]}" title="{tip}">{html.escape(piece)}</span>')
    counts = np.bincount(buckets, minlength=4).tolist()
    legend = " ".join(f'<span style="background:{c}">&nbsp;{name}: {n}&nbsp;</span>' for c, name, n in
                      zip(GLTR_COLOURS, ("top 10", "top 100", "top 1000", "beyond"), counts))
    scores = ", ".join(f"{m} {st.score(m):.3f}" for m in METHODS)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>GLTR view</title></head>"
            "<body style='font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.7'>"
            f"<p>{legend}</p><p style='white-space:pre-wrap'>{''.join(pieces)}</p>"
            f"<p style='color:#555'>{scores}</p></body></html>")
