"""DPO + LoRA steps with the frozen weights (LoRA's base layers and the output layer) through MKL
vs through oneDNN (lmlab.cpu.onednn.OneDNNFrozenLinear, used on non-Intel CPUs), alternating, each run
in its own process.

    python benchmarks/lora_base_gemm.py [--pairs 24] [--rounds 2]

Same setup as dpo_speed.py's lmlab side (fp32, LoRA r=16 on all linear layers, batch 2, max
length 256, HH-RLHF pairs). Prints each run's training seconds, final loss and peak RSS: the loss
must agree and the time shows what the oneDNN path saves on this CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(gemm: str, data: str) -> dict:
    from lmlab.config import load_config
    from lmlab.cpu import features
    from lmlab.train import dpo as dpo_stage
    from lmlab.train.config import TrainConfig
    from lmlab.train.objectives import dpo
    from lmlab.train.preference import comparison_batches
    from lmlab.train.trainer import Trainer

    if gemm == "mkl":
        features.onednn_preferred = lambda: False
    elif not features.onednn_preferred():
        sys.exit("this CPU multiplies through MKL anyway (an Intel CPU): nothing to compare")
    cfg = load_config(TrainConfig, None, None, data=data, output=tempfile.mkdtemp(), method="lora", batch_size=2,
                      max_length=256, epochs=1, lr=5e-6, progress=False, log_every=10 ** 6,
                      lora={"r": 16, "alpha": 32})
    run = dpo_stage.start(cfg)
    data = comparison_batches(cfg, run.tokenizer, cfg.data, dpo.collate)
    trainer = Trainer(run.model, dpo.DPO(0.1), data, cfg, None, run.d)
    t = time.perf_counter()
    result = trainer.fit()
    return {"gemm": gemm, "seconds": time.perf_counter() - t, "loss": result["loss"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: GEMM DATA
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(*args.one)), flush=True)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from dpo_speed import select_pairs

    data = select_pairs(args.pairs, 256, Path(tempfile.mkdtemp()) / "pairs.jsonl")
    print(f"{'base GEMM':10}{'seconds':>10}{'loss':>12}{'peak RSS MB':>13}")
    for _ in range(args.rounds):
        for gemm in ("mkl", "onednn"):
            out = subprocess.run([sys.executable, __file__, "--one", gemm, str(data)], capture_output=True, text=True)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(out.stderr[-2000:])
            r = json.loads(line[7:])
            print(f"{r['gemm']:10}{r['seconds']:>10.1f}{r['loss']:>12.6f}{r['peak_rss_mb']:>13.0f}", flush=True)


if __name__ == "__main__":
    import _results

    _results.run(main)
