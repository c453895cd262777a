"""Seeing the decoding algorithms: one prompt under several of them, and the next-token
distribution that temperature, top-k, top-p and min-p reshape."""

from __future__ import annotations

from pathlib import Path

import torch

from lmlab.engine import processors
from lmlab.engine.params import SamplingParams

SETTINGS = {  # name -> SamplingParams keywords (beam search is added separately)
    "greedy": dict(temperature=0),
    "temperature 0.7": dict(temperature=0.7),
    "temperature 1.0": dict(temperature=1.0),
    "top-k 40": dict(temperature=1.0, top_k=40),
    "top-p 0.9": dict(temperature=1.0, top_p=0.9),
    "min-p 0.1": dict(temperature=1.0, min_p=0.1),
    "typical-p 0.9": dict(temperature=1.0, typical_p=0.9),
}


def compare(lm, prompt: str, max_tokens: int = 64, seed: int = 0, num_beams: int = 4,
            raw: bool = False) -> list[dict]:
    """Rows of {setting, tokens, cum_logprob, text}, greedy and beam search first."""
    from lmlab.engine.beam import BeamParams, beam_search

    ids = lm.prompt_ids(prompt, raw=raw)
    names = list(SETTINGS)
    params = [SamplingParams(max_tokens=max_tokens, seed=seed, **SETTINGS[n]) for n in names]
    outs = lm.engine.generate([ids] * len(params), params)
    rows = [{"setting": n, "tokens": len(o.outputs[0].token_ids),
             "cum_logprob": round(o.outputs[0].cumulative_logprob, 2), "text": o.outputs[0].text.strip()}
            for n, o in zip(names, outs)]
    best = beam_search(lm.model, ids, BeamParams(num_beams=num_beams, max_tokens=max_tokens,
                                                  stop_token_ids=lm.stop_token_ids))[0]
    rows.insert(1, {"setting": f"beam search ({num_beams} beams)", "tokens": len(best.token_ids),
                    "cum_logprob": round(best.cumulative_logprob, 2),
                    "text": lm.tokenizer.decode(best.token_ids).strip()})
    return rows


@torch.inference_mode()
def next_token_distribution(lm, prompt: str, top: int = 20, temperatures=(0.5, 1.0, 1.5),
                            top_k: int = 5, top_p: float = 0.9, min_p: float = 0.1,
                            raw: bool = False) -> list[dict]:
    """The `top` most likely next tokens: probability at each temperature, and whether top-k,
    top-p and min-p (at temperature 1) keep them."""
    ids = torch.tensor([lm.prompt_ids(prompt, raw=raw)])
    logits = lm.model(ids, last_only=True)[:, -1].float()
    order = logits[0].argsort(descending=True)[:top].tolist()
    probs = {t: (logits / t).softmax(-1)[0] for t in temperatures}
    kept = {}
    for name, kw in (("top_k", dict(top_k=top_k)), ("top_p", dict(top_p=top_p)), ("min_p", dict(min_p=min_p))):
        warped = processors.warp(logits.clone(), [SamplingParams(temperature=1.0, **kw)])
        kept[name] = torch.isfinite(warped[0])
    rows = []
    for rank, tid in enumerate(order, 1):
        row = {"rank": rank, "token": repr(lm.tokenizer.decode([tid], skip_special_tokens=False))}
        row.update({f"p@T={t}": round(float(probs[t][tid]), 4) for t in temperatures})
        row.update({f"{name}={v}": "keep" if kept[name][tid] else "-"
                    for name, v in (("top_k", top_k), ("top_p", top_p), ("min_p", min_p))})
        rows.append(row)
    return rows


def plot_distribution(rows: list[dict], path: str | Path, title: str = "next-token distribution") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = [k for k in rows[0] if k.startswith("p@T=")]
    keeps = [k for k in rows[0] if "=" in k and not k.startswith("p@")]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 7), height_ratios=[3, 1], sharex=True)
    width = 0.8 / len(temps)
    x = range(len(rows))
    for i, t in enumerate(temps):
        ax.bar([j + i * width for j in x], [r[t] for r in rows], width, label=t.replace("p@", ""))
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend()
    for i, k in enumerate(keeps):  # which candidates each filter keeps (at T=1)
        ax2.scatter([j for j in x if rows[j][k] == "keep"], [i] * sum(r[k] == "keep" for r in rows), marker="s")
    ax2.set_yticks(range(len(keeps)), keeps)
    ax2.set_xticks([j + 0.4 - width / 2 for j in x], [r["token"] for r in rows], rotation=60, fontsize=8)
    ax2.set_ylim(-0.5, len(keeps) - 0.5)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
