"""`--json PATH` for every benchmark: the tables it printed, the command and the CPU, as JSON.

`python benchmarks/results.py` turns the saved files (benchmarks/results/*.json by default) into
the current-figures section of benchmarks/RESULTS.md, one table set per CPU kind.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path


def add_json_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", metavar="PATH", default=None,
                    help="also save the printed tables, the command and the CPU as JSON")


def cpu_kind() -> str:
    """The CPU model name and the vector extensions that decide lmlab's fast paths."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    ext = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{name} ({', '.join(ext) or 'no AVX2'})"


def write_json(path: str | None, extra: dict | None = None) -> None:
    if not path:
        return
    from lmlab.report.table import printed

    payload = {"script": Path(sys.argv[0]).name, "argv": sys.argv[1:], "cpu": cpu_kind(),
               "date": datetime.date.today().isoformat(), "tables": printed, **(extra or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"saved {path}")


def run(main) -> int:
    """Run a benchmark's `main()` with `--json PATH` taken off the command line first, then save
    what it printed. Scripts keep their own argument parsers unchanged."""
    pre = argparse.ArgumentParser(add_help=False)
    add_json_flag(pre)
    known, rest = pre.parse_known_args(sys.argv[1:])
    if "-h" in rest or "--help" in rest:
        print("  --json PATH  also save the printed tables, the command and the CPU as JSON\n")
    sys.argv[1:] = rest
    code = main()
    write_json(known.json)
    return code or 0
