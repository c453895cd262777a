"""Results as terminal tables (rich), the one way lmlab prints rows of numbers.

Every table printed in a process is also kept in `printed`, so a benchmark's `--json` can save
exactly what it showed (benchmarks/_results.py) and RESULTS.md can be written from that.
"""

from __future__ import annotations

printed: list[dict] = []


def print_table(rows: list[dict], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    printed.append({"title": title, "rows": [dict(r) for r in rows]})
    table = Table(title=title)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(_fmt(r.get(c, "")) for c in columns))
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: never cut numbers to fit 80 columns
        console = Console(width=max(console.width, 200))
    console.print(table)


def print_kv(info: dict, title: str | None = None) -> None:
    print_table([{"key": k, "value": v} for k, v in info.items()], title)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
