"""Write the current-figures section of benchmarks/RESULTS.md from benchmarks' `--json` files.

    python benchmarks/decode.py --json benchmarks/results/decode.json     # any benchmark, --json
    python benchmarks/results.py [FILES...]                              # default: results/*.json

Each file holds the tables a benchmark printed (`_results.write_json`); files are grouped by the
CPU kind they were measured on, newest first. Everything between the two marker lines of
RESULTS.md is replaced; the history below them is left as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- current figures: begin (benchmarks/results.py) -->", "<!-- current figures: end -->"


def markdown_table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def render(files: list[Path]) -> str:
    runs = [json.loads(f.read_text(encoding="utf-8")) | {"_file": f.name} for f in files]
    out = []
    for cpu in sorted({r.get("cpu", "unknown CPU") for r in runs}):
        out.append(f"### {cpu}\n")
        for r in sorted((r for r in runs if r.get("cpu", "unknown CPU") == cpu),
                        key=lambda r: (r.get("script", ""), r.get("date", ""))):
            cmd = " ".join(["python benchmarks/" + r.get("script", r["_file"]), *r.get("argv", [])])
            out.append(f"**`{cmd}`** ({r.get('date', 'undated')})\n")
            for t in r.get("tables", []):
                if t.get("title"):
                    out.append(f"_{t['title']}_\n")
                if t.get("rows"):
                    out.append(markdown_table(t["rows"]) + "\n")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args()
    files = args.files or sorted((HERE / "results").glob("*.json"))
    text = args.results.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.results.write_text(f"{head}{BEGIN}\n\n{render(files)}\n{END}{tail}", encoding="utf-8")
    print(f"wrote {args.results} from {len(files)} file(s)")


if __name__ == "__main__":
    main()
