"""Performance vs efficiency of every fine-tuning method, measured on one task.

    .venv/bin/python benchmarks/finetune_methods.py            # all methods, ~8 min on 2 cores
    .venv/bin/python benchmarks/finetune_methods.py --methods lora,prompt --train 64
    .venv/bin/python benchmarks/finetune_methods.py --report     # table and plot again, from --out

The task: sentiment of short reviews, answered "positive" or "negative", written by a small
grammar so it runs offline. Half the reviews turn with "but" (the label follows the second
clause), and the test reviews use adjectives never seen in training, so a method has to keep what
the model knew about words to score well. Each method fine-tunes the bundled SmolLM2-135M with
`lmlab train sft --method M` (the same Python call), in its own process so that peak memory is
its own, and is reloaded from what the run saved. "none" is the untouched model, zero-shot.

Columns: accuracy on the test reviews (the label whose first token is more probable as the
answer, "positive"/"Positive" against "negative"/"Negative", as lm-eval scores multiple choice;
`feature`: its classifier); trainable parameters (count and share); training tokens/s (the
trainer's; for `feature` the classifier's steps, after one pass to extract features: see
train_s); train_s (the whole run: load, train, save); peak RSS of the process; latency: one
answer of 3 greedy tokens through the Engine, requests one at a time (`feature`: one
classification). Writes OUT/results.json and OUT/finetune_methods.png.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

METHODS = ["none", "full", "head", "feature", "lora", "adapter", "prefix", "prompt"]
# Learning rates in each method's usual range (full fine-tuning moves every weight, so it takes
# the smallest step; a soft prompt is a handful of vectors and takes the largest).
LR = {"full": 2e-5, "head": 1e-4, "feature": 1e-2, "lora": 1e-3, "adapter": 1e-3, "prefix": 1e-3, "prompt": 3e-2}

THINGS = ["food", "service", "movie", "plot", "music", "room", "staff", "price", "screen", "battery", "story", "coffee"]
POSITIVE = {"train": ["great", "wonderful", "excellent", "lovely", "fantastic", "delightful", "superb", "pleasant"],
            "test": ["brilliant", "charming", "outstanding", "terrific", "marvelous", "splendid"]}
NEGATIVE = {"train": ["terrible", "awful", "horrible", "dreadful", "disappointing", "poor", "nasty", "boring"],
            "test": ["atrocious", "dismal", "lousy", "appalling", "mediocre", "unbearable"]}


def make_task(n: int, split: str, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        good, bad = rng.choice(POSITIVE[split]), rng.choice(NEGATIVE[split])
        a, b = rng.sample(THINGS, 2)
        final = good if label == "positive" else bad
        if rng.random() < 0.5:
            review = f"The {a} was {final}."
        else:  # the second clause decides
            first = bad if label == "positive" else good
            review = f"The {a} was {first}, but the {b} was {final}."
        rows.append({"prompt": f"Review: {review}\nIs this review positive or negative? Answer with one word.",
                     "completion": label})
    rng.shuffle(rows)
    return rows


def run_one(method: str, out: Path, train: Path, test: Path, epochs: float) -> dict:
    """Train one method (in this process), then score it; returns a result row."""
    import lmlab
    from lmlab.config import load_config
    from lmlab.train.config import TrainConfig

    rows = [json.loads(line) for line in test.read_text().splitlines()]
    row = {"method": method}
    t0 = time.perf_counter()
    if method == "none":
        lm = lmlab.load(workload="scoring")  # fp32, like the trained models it is compared with
        row.update(trainable_params=0, trainable_pct=0.0)
    else:
        from lmlab.train.sft import sft

        # The feature classifier trains on features extracted once, so its epochs cost almost
        # nothing: it gets ten times as many.
        cfg = load_config(TrainConfig, None, data=str(train), output=str(out / method), method=method,
                          epochs=epochs * (10 if method == "feature" else 1), batch_size=8, max_length=96, lr=LR[method], warmup_steps=2,
                          progress=False, seed=0)
        result = sft(cfg)
        row.update(trainable_params=result["trainable_params"], trainable_pct=100 * result["trainable_fraction"],
                   train_tokens_per_s=result["tokens_per_s"], train_s=time.perf_counter() - t0,
                   final_loss=result["loss"])
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if method == "feature":
            from lmlab.train.classify import FeatureClassifier

            clf = FeatureClassifier(result["final"])

            def classify(r):
                return clf.predict([r["prompt"]])[0]

            return {**row, **_accuracy(rows, classify), **_latency(rows, classify)}
        lm = lmlab.load(result["final"])  # what the run saved: merged weights or the adapter folder
    row.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {**row, **_accuracy(rows, lambda r: _label(lm, r["prompt"])),
            **_latency(rows, lambda r: lm.generate(r["prompt"], max_new_tokens=3, temperature=0).text)}


def _label(lm, prompt: str) -> str:
    """The label whose first token (either capitalisation) is more probable as the answer."""
    import torch

    with torch.no_grad():
        probs = lm.model(torch.tensor([lm.prompt_ids(prompt)]), last_only=True)[0, -1].softmax(-1)
    score = {label: sum(float(probs[lm.tokenizer.encode(w, add_special_tokens=False)[0]])
                        for w in (label, label.capitalize())) for label in ("positive", "negative")}
    return max(score, key=score.get)


def _accuracy(rows: list[dict], answer) -> dict:
    return {"accuracy": sum(answer(r) == r["completion"] for r in rows) / len(rows)}


def _latency(rows: list[dict], answer, n: int = 16) -> dict:
    answer(rows[0])  # warm-up, not timed
    t0 = time.perf_counter()
    for r in rows[:n]:
        answer(r)
    return {"latency_ms": 1000 * (time.perf_counter() - t0) / min(n, len(rows))}


def _row(r: dict) -> dict:
    """A short-column table row (the full numbers are in results.json)."""
    def f(key, fmt):
        return format(r[key], fmt) if r.get(key) is not None else "-"

    return {"method": r["method"], "accuracy": f("accuracy", ".3f"), "trainable": f("trainable_params", ","),
            "trainable %": f("trainable_pct", ".3f"), "train tok/s": f("train_tokens_per_s", ".0f"),
            "train s": f("train_s", ".0f"), "peak MB": f("peak_rss_mb", ".0f"), "latency ms": f("latency_ms", ".0f")}


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("accuracy", "test accuracy", False), ("trainable_pct", "trainable parameters (%)", True),
              ("train_tokens_per_s", "training tokens/s", True), ("peak_rss_mb", "peak memory (MB)", False),
              ("latency_ms", "latency per answer (ms)", False)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    for ax, (key, title, log) in zip(axes, panels):
        pts = [(r["method"], r[key]) for r in rows if r.get(key)]
        ax.bar(*zip(*pts), color="tab:blue")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=60)
        if log:
            ax.set_yscale("log")
    fig.suptitle("Fine-tuning methods on one task (SmolLM2-135M, sentiment with unseen adjectives)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default="runs/finetune_methods")
    p.add_argument("--train", type=int, default=128, help="training reviews")
    p.add_argument("--test", type=int, default=64, help="test reviews (unseen adjectives)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--report", action="store_true",
                   help="only print the table and redraw the plot from the results already in --out")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = p.parse_args()
    out = Path(args.out)
    train, test = out / "train.jsonl", out / "test.jsonl"
    if args.one:
        row = run_one(args.one, out, train, test, args.epochs)
        (out / f"{args.one}.json").write_text(json.dumps(row))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for path, rows in ((train, make_task(args.train, "train", 0)), (test, make_task(args.test, "test", 0))):
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = []
    for method in args.methods.split(","):
        if not args.report:
            print(f"--- {method}", flush=True)
            subprocess.run([sys.executable, __file__, "--one", method, "--out", str(out), "--epochs",
                            str(args.epochs)], check=True)
        results.append(json.loads((out / f"{method}.json").read_text()))
    from lmlab.report.table import print_table

    print_table([_row(r) for r in results], title="fine-tuning methods: performance vs efficiency")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"plot: {plot(results, out / 'finetune_methods.png')}")
    return 0


if __name__ == "__main__":
    import _results

    sys.exit(_results.run(main))
