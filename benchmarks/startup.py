"""Start-up costs a user feels: `lmlab --help`, and loading the cached bundled model.

Each figure is the median of several fresh processes. The peer is transformers'
`AutoModelForCausalLM.from_pretrained` + `AutoTokenizer` on the same cached folder.

    python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

LOAD = {
    "lmlab": "import lmlab; lm = lmlab.load(%r)",
    "transformers": ("import transformers, torch; "
                     "transformers.AutoModelForCausalLM.from_pretrained(%r, dtype=torch.float32); "
                     "transformers.AutoTokenizer.from_pretrained(%r)"),
}


def timed(code: str) -> float:
    """Seconds for a fresh interpreter to run `code`, printed by the child itself."""
    wrapper = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from lmlab.model.io.resolve import resolve
    from lmlab.report.table import print_table

    folder = str(resolve("smollm2"))  # converts once if the cache is cold; not timed
    help_s = statistics.median(wall([sys.executable, "-m", "lmlab.cli.main", "--help"]) for _ in range(args.runs))
    ours = statistics.median(timed(LOAD["lmlab"] % folder) for _ in range(args.runs))
    peer = statistics.median(timed(LOAD["transformers"] % (folder, folder)) for _ in range(args.runs))
    print_table([
        {"what": "lmlab --help (process wall time)", "seconds": help_s, "goal": "< 1 s"},
        {"what": "lmlab.load(cached bundled model), incl. import torch", "seconds": ours, "goal": "< 3 s"},
        {"what": "transformers from_pretrained + tokenizer, same folder", "seconds": peer, "goal": ""},
        {"what": "ratio transformers / lmlab (load)", "seconds": peer / ours, "goal": "> 1"},
    ], title=f"start-up, median of {args.runs} fresh processes")


if __name__ == "__main__":
    import _results

    _results.run(main)
