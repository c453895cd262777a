"""The leaderboard of a ratings result (ratings.ratings): a terminal table, JSON, a PNG with the
95% intervals drawn, and a self-contained HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path


def rows(result: dict, key: str = "ratings") -> list[dict]:
    table = result[key] if key == "ratings" else result[key]["ratings"]
    out = []
    for m, r in sorted(table.items(), key=lambda kv: -kv[1]["rating"]):
        row = {"rank": r["rank"], "model": m, "rating": round(r["rating"], 1),
               "95% CI": f"+{r['upper'] - r['rating']:.1f} / -{r['rating'] - r['lower']:.1f}"}
        if "elo" in r:
            row["online elo"] = round(r["elo"], 1)
            row["battles"] = r["battles"]
        out.append(row)
    return out


def print_leaderboard(result: dict) -> None:
    from lmlab.report.table import print_table

    print_table(rows(result), title=f"Bradley-Terry ratings ({result['n_battles']} battles, "
                                    f"{result['bootstrap']} bootstrap rounds)")
    if "style_control" in result:
        print_table(rows(result, "style_control"), title="style-controlled ratings")


def write_png(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(result["ratings"].items(), key=lambda kv: kv[1]["rating"])
    names = [m for m, _ in items]
    r = [v["rating"] for _, v in items]
    err = [[v["rating"] - v["lower"] for _, v in items], [v["upper"] - v["rating"] for _, v in items]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.errorbar(r, range(len(names)), xerr=err, fmt="o", capsize=4, label="Bradley-Terry, 95% CI")
    if "style_control" in result:
        sc = result["style_control"]["ratings"]
        ax.plot([sc[m]["rating"] for m in names], range(len(names)), "x", label="style-controlled")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("rating (Arena scale)")
    ax.axvline(1000, color="grey", lw=0.5)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_html(result: dict, path: str | Path) -> None:
    table = result["ratings"]
    lo = min(v["lower"] for v in table.values()) - 10
    hi = max(v["upper"] for v in table.values()) + 10

    def pct(x):
        return 100 * (x - lo) / (hi - lo)
    body = []
    for row in rows(result):
        v = table[row["model"]]
        bar = (f'<div class="bar"><span class="ci" style="left:{pct(v["lower"]):.1f}%;'
               f'width:{pct(v["upper"]) - pct(v["lower"]):.1f}%"></span>'
               f'<span class="pt" style="left:{pct(v["rating"]):.1f}%"></span></div>')
        body.append(f"<tr><td>{row['rank']}</td><td>{html.escape(row['model'])}</td><td>{row['rating']}</td>"
                    f"<td>{row['95% CI']}</td><td>{bar}</td></tr>")
    page = f"""<!doctype html><meta charset="utf-8"><title>lmlab arena leaderboard</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left}}
.bar{{position:relative;width:320px;height:12px;background:#eee}}
.ci{{position:absolute;top:3px;height:6px;background:#69c}}.pt{{position:absolute;top:0;width:3px;height:12px;background:#036}}</style>
<h1>Leaderboard</h1><p>{result['n_battles']} battles; Bradley-Terry ratings (Arena scale) with
{result['bootstrap']}-round bootstrap 95% intervals; rank = 1 + models whose interval lies entirely above.</p>
<table><tr><th>rank</th><th>model</th><th>rating</th><th>95% CI</th><th>{lo:.0f} - {hi:.0f}</th></tr>
{''.join(body)}</table>
<script type="application/json" id="ratings">{html.escape(json.dumps(result["ratings"]))}</script>
"""
    Path(path).write_text(page, encoding="utf-8")
