"""lm-evaluation-harness as a client of `lmlab serve`, against lm-eval's own HF backend.

Runs the same custom HellaSwag task (N items of ../shared/data/hellaswag_val_dev500.jsonl) twice:

  lm_eval --model local-completions \
      --model_args base_url=http://127.0.0.1:PORT/v1/completions,model=smollm2,tokenizer_backend=remote,...
  lm_eval --model hf --model_args pretrained=<the converted folder>,dtype=float32

and prints acc / acc_norm side by side (they should agree: the server returns the model's own
log-probs for every prompt token via echo + logprobs). Needs `pip install lm-eval`.

    .venv/bin/python benchmarks/serve_lm_eval.py --limit 50
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hellaswag_val_dev500.jsonl"

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lm_eval_cmd() -> list[str]:
    exe = shutil.which("lm_eval") or str(Path(sys.executable).with_name("lm_eval"))
    return [exe, "run"] if Path(exe).exists() else [sys.executable, "-m", "lm_eval", "run"]


def run_lm_eval(model: str, model_args: str, tmp: Path, tag: str, limit: int, extra: list[str]) -> dict:
    out = tmp / f"out_{tag}"
    cmd = lm_eval_cmd() + ["--model", model, "--model_args", model_args, "--tasks", "hellaswag_serve",
                           "--include_path", str(tmp), "--limit", str(limit), "--output_path", str(out), *extra]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, text=True, capture_output=True)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"lm_eval {model} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    files = sorted(glob.glob(str(out / "**" / "results_*.json"), recursive=True))
    res = json.loads(Path(files[-1]).read_text())["results"]["hellaswag_serve"]
    return {"acc": res["acc,none"], "acc_norm": res["acc_norm,none"], "seconds": round(secs, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default=None, help="lmlab model spec (default: the bundled smollm2)")
    ap.add_argument("--url", default=None, help="use a running server's base URL instead of starting one")
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per /v1/completions request")
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()

    if shutil.which("lm_eval") is None and not Path(sys.executable).with_name("lm_eval").exists():
        print("lm-eval is not installed: pip install lm-eval", file=sys.stderr)
        return 2
    from lmlab.model.io.resolve import resolve
    folder = resolve(args.model)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tmp = Path(tempfile.mkdtemp(prefix="serve_lm_eval_"))
    (tmp / "hellaswag_serve.yaml").write_text(TASK.format(name="hellaswag_serve", data=Path(args.data).resolve()))

    proc = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(tmp / "server.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "lmlab.cli.main", "serve", "--model", str(folder),
                                 "--served-model-name", "smollm2", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
        import httpx
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start; see {tmp / 'server.log'}")
            time.sleep(0.3)
    results = {}
    try:
        results["lmlab serve (local-completions)"] = run_lm_eval(
            "local-completions",
            f"base_url={url}/v1/completions,model=smollm2,tokenizer_backend=remote,num_concurrent=1,"
            "max_retries=1,tokenized_requests=True", tmp, "serve", args.limit,
            ["--batch_size", str(args.batch_size)])
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
    if not args.skip_hf:
        results["lm-eval hf backend"] = run_lm_eval(
            "hf", f"pretrained={folder},dtype=float32", tmp, "hf", args.limit,
            ["--device", "cpu", "--batch_size", str(args.batch_size)])
    print(f"\nHellaSwag, first {args.limit} items of {Path(args.data).name}")
    print(f"{'backend':34}{'acc':>8}{'acc_norm':>10}{'seconds':>9}")
    for k, v in results.items():
        print(f"{k:34}{v['acc']:>8.3f}{v['acc_norm']:>10.3f}{v['seconds']:>9}")
    vals = list(results.values())
    if len(vals) == 2:
        same = vals[0]["acc"] == vals[1]["acc"] and vals[0]["acc_norm"] == vals[1]["acc_norm"]
        print("same acc and acc_norm" if same else "DIFFERENT scores")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    import _results

    sys.exit(_results.run(main))
