"""What each prompting technique does for the bundled model on GSM8K.

    .venv/bin/python benchmarks/gsm8k_prompting.py [--limit 50] [--model M] [--paths 5] [--settings cot,sc]

The same first --limit problems of ../shared/data/gsm8k_test_dev200.jsonl under: zero-shot;
8-shot with bare answers; 8-shot chain-of-thought (demonstrations with their reasoning);
zero-shot chain-of-thought (Kojima et al.'s two stages); self-consistency (majority of --paths
sampled chain-of-thought paths at temperature 0.7). Greedy decoding otherwise. Prints exact
match with its standard error and the seconds each took; writes OUT/results.json and
OUT/gsm8k_prompting.png. The literature (Wei et al. 2022) finds chain-of-thought helps only
at scale, around 100B parameters; this shows what a 135M model does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test_dev200.jsonl"


def settings(paths: int) -> dict[str, tuple[str, dict]]:
    return {"zero": ("zero-shot", {}),
            "fewshot": ("8-shot", {"fewshot": 8}),
            "cot": ("8-shot CoT", {"cot": True}),
            "zscot": ("zero-shot CoT", {"zero_shot_cot": True}),
            "sc": (f"self-consistency ({paths} CoT paths)", {"cot": True, "self_consistency": paths})}


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh([r["prompting"] for r in rows], [r["exact_match"] for r in rows],
            xerr=[r["stderr"] for r in rows], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("exact match (± 1 standard error)")
    ax.set_title(f"GSM8K, first {rows[0]['n']} problems, bundled SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--model", default=None)
    ap.add_argument("--paths", type=int, default=5, help="sampled paths for self-consistency")
    ap.add_argument("--settings", default="zero,fewshot,cot,zscot,sc", help="which of zero,fewshot,cot,zscot,sc")
    ap.add_argument("--out", default="runs/gsm8k_prompting")
    args = ap.parse_args()
    if not DATA.is_file():
        sys.exit(f"{DATA} is absent (it comes with ../shared)")
    import lmlab
    from lmlab.eval import evaluate
    from lmlab.report.table import print_table

    lm = lmlab.load(args.model, workload="scoring")  # accuracy in the reference format
    out = Path(args.out)
    rows = []
    table = settings(args.paths)
    for name, options in (table[k] for k in args.settings.split(",")):
        print(f"--- {name}", flush=True)
        folder = out / name.split(" (")[0].replace(" ", "_")
        m = evaluate(lm, "gsm8k", data=str(DATA), limit=args.limit, output_dir=folder, **options)["results"]["gsm8k"]
        rows.append({"prompting": name, "exact_match": m["exact_match"], "stderr": m["exact_match_stderr"],
                     "n": m.get("n", args.limit), "seconds": m["seconds"]})
    print_table([{**r, "exact_match": f"{r['exact_match']:.3f}", "stderr": f"{r['stderr']:.3f}",
                  "seconds": f"{r['seconds']:.0f}"} for r in rows],
                title=f"GSM8K prompting, bundled model, first {args.limit} problems")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"plot: {plot(rows, out / 'gsm8k_prompting.png')}")
    return 0


if __name__ == "__main__":
    import _results

    sys.exit(_results.run(main))
