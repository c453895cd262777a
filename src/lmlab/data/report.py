"""The report of a curation run: records and bytes in and out per step, time, examples of what
each step removed and why, the language mix, PII redactions, leaked benchmark items, duplicate
clusters. Written as DIR/report.json and DIR/report.html (one self-contained page, plots as
inline SVG), printed as a terminal table.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

from lmlab.errors import LmlabError


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _examples(path: Path, n: int) -> list[dict]:
    out = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(out) >= n:
                break
            r = json.loads(line)
            text = r.get("text", "")
            out.append({"where": r.get("where"), "reason": r.get("reason"),
                        "text": text[:300] + ("…" if len(text) > 300 else "")})
    return out


def build_report(out: Path, ks, pre, dd, post, dedup_stats, read_stats, wall, cfg) -> dict:
    work = out / "work"
    a = [_load(work / f"{k:05d}" / "A.json") for k in ks]
    c = [_load(work / f"{k:05d}" / "C.json") for k in ks]
    steps = []

    def add_map(name, metas):
        s = {"step": name, "in": 0, "out": 0, "bytes_in": 0, "bytes_out": 0, "cpu_seconds": 0.0}
        for m in metas:
            st = m["stats"][name]
            s["in"] += st["in"]
            s["out"] += st["out"]
            s["bytes_in"] += st["bytes_in"]
            s["bytes_out"] += st["bytes_out"]
            s["cpu_seconds"] += st["seconds"]
        steps.append(s)

    for name in pre:
        add_map(name, a)
    if dd:
        bytes_in = sum(m["bytes_out"] for m in a)
        for i, name in enumerate(dd):
            st = dedup_stats[name]
            steps.append({"step": name, "in": st["in"], "out": st["out"], "bytes_in": bytes_in if i == 0 else None,
                          "bytes_out": sum(m["bytes_in"] for m in c) if i == len(dd) - 1 else None,
                          "cpu_seconds": st["seconds"] + (sum(m["signature_seconds"] for m in a) if i == 0 else 0)})
    for name in post:
        add_map(name, c)
    for s in steps:
        s["removed"] = s["in"] - s["out"]
        s["examples"] = _examples(out / "removed" / f"{s['step']}.jsonl", cfg.examples)
        reasons = Counter()
        p = out / "removed" / f"{s['step']}.jsonl"
        if p.is_file():
            with open(p, encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    reasons[_reason_kind(s["step"], r["reason"])] += 1
        s["reasons"] = dict(reasons.most_common())
    clusters = Counter()
    p = out / "removed" / "minhash.jsonl"
    if p.is_file():
        with open(p, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                clusters[r["cluster"]] = r["cluster_size"]
    langs, pii, leaked = Counter(), Counter(), Counter()
    for m in c:
        langs.update(m["languages"])
    for m in a + c:
        pii.update(m["pii"])
        leaked.update(m["leaked"])
    records_in = sum(m["n_in"] for m in a)
    return {
        "inputs": cfg.inputs, "out": str(out), "executor": cfg.executor,
        "records_in": records_in, "records_out": sum(m["n"] for m in c),
        "bytes_in": sum(m["bytes_in"] for m in a), "bytes_out": sum(m["bytes_out"] for m in c),
        "bad_rows_skipped": read_stats.bad_rows, "bad_row_examples": read_stats.bad_examples,
        "wall_seconds": round(wall, 3), "steps": steps,
        "languages": dict(langs.most_common()), "pii_redacted": dict(pii.most_common()),
        "leaked_items": dict(sorted(leaked.items())),
        "near_duplicate_clusters": {"count": len(clusters), "largest": max(clusters.values(), default=0)},
        "batches": len(ks),
    }


def _reason_kind(step: str, reason: str) -> str:
    if step in ("exact_dedup", "minhash", "decontaminate", "toxicity"):
        return {"exact_dedup": "exact duplicate", "minhash": "near duplicate", "decontaminate": "n-gram overlap",
                "toxicity": "listed words" if "listed" in reason else "classifier"}[step]
    if step == "language":
        return reason.split(" (")[0].split(" score")[0]
    return reason


def write_report(out: Path, report: dict) -> None:
    (out / "report.html").write_text(html_page(report), encoding="utf-8")
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out / "report.json")  # last: its presence marks a finished run


def load_report(folder: str | Path) -> dict:
    p = Path(folder) / "report.json"
    if not p.is_file():
        raise LmlabError(f"{folder}: no report.json (not a finished `lmlab data curate` run)")
    return _load(p)


def table_rows(report: dict) -> list[dict]:
    rows = []
    for s in report["steps"]:
        rows.append({"step": s["step"], "in": s["in"], "out": s["out"], "removed": s["removed"],
                     "removed %": round(100 * s["removed"] / s["in"], 1) if s["in"] else 0.0,
                     "MB in": round(s["bytes_in"] / 1e6, 3) if s["bytes_in"] is not None else "",
                     "MB out": round(s["bytes_out"] / 1e6, 3) if s["bytes_out"] is not None else "",
                     "cpu s": round(s["cpu_seconds"], 2),
                     "top reason": next(iter(s["reasons"]), "")})
    return rows


def print_report(report: dict) -> None:
    from lmlab.report.table import print_table

    print_table(table_rows(report), title=f"curation: {report['records_in']} records in, "
                                          f"{report['records_out']} out ({report['wall_seconds']:.1f} s)")
    if report["languages"]:
        print_table([{"language": k, "records": v} for k, v in list(report["languages"].items())[:10]],
                    title="language mix (kept)")
    if report["leaked_items"]:
        print_table([{"benchmark item": k, "documents": v} for k, v in list(report["leaked_items"].items())[:20]],
                    title=f"leaked benchmark items ({len(report['leaked_items'])})")


# ---- HTML ---------------------------------------------------------------------------------

def _bars(title: str, items: list[tuple[str, float]], color: str = "#4c78a8") -> str:
    if not items:
        return ""
    width, row, label_w = 640, 22, 160
    top = max(v for _, v in items) or 1
    h = row * len(items) + 30
    parts = [f'<svg width="{width}" height="{h}" xmlns="http://www.w3.org/2000/svg" role="img">',
             f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>']
    for i, (name, v) in enumerate(items):
        y = 24 + i * row
        w = (width - label_w - 70) * v / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{html.escape(str(name))}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{color}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 14}">{v:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: dict) -> str:
    rows = table_rows(report)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0]) if rows else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    examples = []
    for s in report["steps"]:
        if not s["examples"]:
            continue
        items = "".join(f"<li><code>{html.escape(str(e['where']))}</code> — <b>{html.escape(str(e['reason']))}</b>"
                        f"<pre>{html.escape(e['text'])}</pre></li>" for e in s["examples"])
        examples.append(f"<h3>{html.escape(s['step'])}: {s['removed']} removed</h3><ul>{items}</ul>")
    plots = [
        _bars("records after each step", [("input", report["records_in"])] + [(s["step"], s["out"])
                                                                             for s in report["steps"]]),
        _bars("records removed per step", [(s["step"], s["removed"]) for s in report["steps"]], "#e45756"),
        _bars("language mix of the kept records", list(report["languages"].items())[:15], "#54a24b"),
        _bars("PII redacted", list(report["pii_redacted"].items()), "#f58518"),
    ]
    leaked = "".join(f"<li><code>{html.escape(k)}</code>: {v} document(s)</li>"
                     for k, v in report["leaked_items"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>lmlab data curate report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}pre{{white-space:pre-wrap;background:#f6f6f6;
padding:6px;max-height:8em;overflow:auto}}svg text{{font-size:12px}}</style></head><body>
<h1>Curation report</h1>
<p>{report['records_in']} records in ({report['bytes_in'] / 1e6:.2f} MB), {report['records_out']} out
({report['bytes_out'] / 1e6:.2f} MB) in {report['wall_seconds']:.1f} s with the {html.escape(report['executor'])}
executor; {report['bad_rows_skipped']} bad rows skipped; {report['near_duplicate_clusters']['count']}
near-duplicate clusters (largest {report['near_duplicate_clusters']['largest']}).</p>
<table><tr>{head}</tr>{body}</table>
{''.join(plots)}
<h2>Leaked benchmark items ({len(report['leaked_items'])})</h2><ul>{leaked or '<li>none</li>'}</ul>
<h2>Examples of removed records</h2>{''.join(examples) or '<p>none</p>'}
</body></html>"""
