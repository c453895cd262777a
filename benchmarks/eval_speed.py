"""lmlab eval against lm-evaluation-harness (HF backend, batch 8, fp32) on the same HellaSwag items.

One run, both evaluators, the same bundled weights (the converted fp32 folder), the same custom
task as the reference figures in ../shared/data/README.md (`doc_to_text: "{{ctx}}"`,
`doc_to_choice: "{{endings}}"`). Prints both scores, the largest per-item log-likelihood
difference, whether acc / acc_norm agree item by item, and the speed ratio. Each side is timed
end to end (model load included) and for its scoring phase alone.

    .venv/bin/python benchmarks/eval_speed.py              # 200 items (800 requests)
    .venv/bin/python benchmarks/eval_speed.py --limit 500  # the whole file
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hellaswag_val_dev500.jsonl"

TASK = """task: hellaswag_shared
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
  cache_dir: {cache}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def run_lm_eval(folder: str, data: Path, tmp: Path, batch_size: int) -> tuple[dict, float, float]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    (tmp / "hs.yaml").write_text(TASK.format(data=data, cache=tmp / "cache"))
    t0 = time.perf_counter()
    model = HFLM(pretrained=folder, dtype="float32", batch_size=batch_size, device="cpu")
    t1 = time.perf_counter()
    out = lm_eval.simple_evaluate(model=model, tasks=["hellaswag_shared"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp)))
    t2 = time.perf_counter()
    return out, t2 - t0, t2 - t1


def run_lmlab(folder: str, data: Path, tmp: Path) -> tuple[dict, list[dict], float, float, float]:
    import json

    from lmlab.eval.runner import evaluate
    from lmlab.lm import LM

    t0 = time.perf_counter()
    lm = LM.load(folder, "fp32")  # the reference format: scores must equal lm-eval's item by item
    t1 = time.perf_counter()
    passes, heads = _record_shapes(lm.model)
    report = evaluate(lm, "hellaswag", data=str(data), output_dir=tmp / "lmlab")
    t2 = time.perf_counter()
    samples = [json.loads(x) for x in (tmp / "lmlab" / "samples_hellaswag.jsonl").read_text().splitlines()]
    return report, samples, t2 - t0, t2 - t1, _matmul_seconds(lm.model, passes, heads)


def _record_shapes(model) -> tuple[list[int], list[int]]:
    """Record the tokens of every body forward pass and the rows of every output-layer call."""
    passes, heads = [], []
    body, head = model.hidden_states, model.lm_head.forward

    def hidden_states(idx, *a, **k):
        passes.append(idx.numel())
        return body(idx, *a, **k)

    def lm_head(x):
        heads.append(x.shape[0] if x.dim() == 2 else x.shape[0] * x.shape[1])
        return head(x)

    model.hidden_states, model.lm_head.forward = hidden_states, lm_head
    return passes, heads


def _matmul_seconds(model, passes: list[int], heads: list[int]) -> float:
    """The run's matmuls alone: every linear layer (through its own kernel) at the recorded sizes
    (one layer's timed per pass, times the number of layers), and the output layer at its recorded
    rows. Nothing else of a forward pass (attention, norms, activations) is counted, so no
    evaluator of these weights, on this machine, at fp32, can score the same tokens faster."""
    import torch

    model.lm_head.__dict__.pop("forward", None)  # _record_shapes's recorder: time the layer itself
    linears = [m for m in model.layers[0].modules() if hasattr(m, "in_features") and not list(m.children())]

    def timed(rows: int, m) -> float:
        x = torch.randn(rows, m.in_features)
        m(x)  # warm-up
        best = float("inf")
        for _ in range(3):  # the fastest of three: a floor should not be inflated by noise
            t = time.perf_counter()
            m(x)
            best = min(best, time.perf_counter() - t)
        return best

    with torch.inference_mode():
        body = sum(timed(n, m) for n in passes for m in linears) * len(model.layers)
        return body + sum(timed(n, model.lm_head) for n in heads)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--batch-size", type=int, default=8, help="lm-eval's batch size")
    ap.add_argument("--skip-lm-eval", action="store_true", help="time lmlab alone")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from lmlab.model.io.resolve import resolve
    from lmlab.report.table import print_table

    folder = str(resolve(None))
    import torch

    print(f"model: {folder} (fp32), torch threads: {torch.get_num_threads()}, items: {args.limit}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "items.jsonl"
        lines = Path(args.data).read_text().splitlines()[: args.limit]
        data.write_text("\n".join(lines) + "\n")
        requests = sum(len(__import__("json").loads(x)["endings"]) for x in lines)

        ours, our_samples, our_total, our_scoring, matmuls = run_lmlab(folder, data, tmp)
        rows = [{"evaluator": "lmlab", "acc": ours["results"]["hellaswag"]["acc"],
                 "acc_norm": ours["results"]["hellaswag"]["acc_norm"], "seconds": round(our_total, 1),
                 "scoring s": round(our_scoring, 1), "requests/s": round(requests / our_scoring, 1)}]
        if not args.skip_lm_eval:
            ref, ref_total, ref_scoring = run_lm_eval(folder, data, tmp, args.batch_size)
            r = ref["results"]["hellaswag_shared"]
            rows.append({"evaluator": f"lm-eval hf (batch {args.batch_size})", "acc": r["acc,none"],
                         "acc_norm": r["acc_norm,none"], "seconds": round(ref_total, 1),
                         "scoring s": round(ref_scoring, 1), "requests/s": round(requests / ref_scoring, 1)})
            theirs = sorted(ref["samples"]["hellaswag_shared"], key=lambda s: s["doc_id"])
            diff = max(abs(a - b[0][0]) for s, t in zip(our_samples, theirs)
                       for a, b in zip(s["loglikelihoods"], t["resps"]))
            same_acc = all(s["acc"] == t["acc"] and s["acc_norm"] == t["acc_norm"]
                           for s, t in zip(our_samples, theirs))
        print_table(rows, title=f"HellaSwag, {args.limit} items, {requests} log-likelihood requests")
        if not args.skip_lm_eval:
            print(f"max |loglikelihood difference| per request: {diff:.2e}")
            print(f"acc and acc_norm identical item by item: {same_acc}")
            print(f"speed ratio (scoring phase): {ref_scoring / our_scoring:.2f}x; "
                  f"end to end (model load included): {ref_total / our_total:.2f}x")
        # The ceiling: lmlab's matmuls alone, with everything else in the forward pass free.
        print(f"lmlab's matmuls alone (fp32, the run's own sizes): {matmuls:.1f} s of {our_scoring:.1f} s scoring"
              + (f"; ratio ceiling at zero other cost: {ref_scoring / matmuls:.2f}x" if not args.skip_lm_eval else ""))
    return 0


if __name__ == "__main__":
    import _results

    sys.exit(_results.run(main))
