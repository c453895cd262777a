"""Training curves: metrics.jsonl (one JSON object per logged step) -> a PNG."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(metrics_path: str | Path, png_path: str | Path, title: str = "training") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in Path(metrics_path).read_text(encoding="utf-8").splitlines() if l.strip()]
    # One panel per kind of number: losses together, then anything else that was logged.
    losses = sorted({k for r in rows for k in r if "loss" in k})
    others = [k for k in ("eval_accuracy", "reward", "kl", "lr") if any(k in r for r in rows)]
    panels = [losses] + [[k] for k in others]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, keys in zip(axes[:, 0], panels):
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r and r[k] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, label=k)
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)
