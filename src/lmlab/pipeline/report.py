"""DIR/report.html and DIR/report.json: the whole run on one self-contained page.

The page needs no network: styles are inline and every plot is a base64 PNG in the page. Its
sections, in order: the recipe; the stages (status, time, memory); every metric per stage with
95% intervals; what each training stage reports of itself; loss and reward curves; judge win
rates, the arena leaderboard and safety (or why they are not available); packaging; the same
prompts answered by each stage side by side; time and memory per stage.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

SECTIONS = ("recipe", "stages", "metrics", "training", "curves", "judge", "arena", "safety", "package",
            "answers", "resources")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:13px}
.answer{white-space:pre-wrap;max-width:320px;font-size:13px}.muted{color:#777}
img{max-width:100%;border:1px solid #eee}
"""


def write(ctx, states: dict, total_seconds: float) -> dict:
    """Write report.json and report.html into ctx.out; return report.json's content."""
    from lmlab.pipeline.recipe import as_dict

    data = {"name": ctx.recipe.name, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "recipe": as_dict(ctx.recipe),
            "total_seconds": round(total_seconds, 2),
            "stages": {n: {k: v for k, v in s.items()} for n, s in states.items()},
            "models": ctx.models(), "final_model": ctx.current_model()}
    (ctx.out / "report.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    recipe_yaml = (ctx.out / "recipe.yaml").read_text(encoding="utf-8") if (ctx.out / "recipe.yaml").is_file() else ""
    (ctx.out / "report.html").write_text(render(data, recipe_yaml), encoding="utf-8")
    return data


# ---- html -----------------------------------------------------------------------------------------

def esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def metric_cell(m) -> str:
    if not isinstance(m, dict) or "value" not in m:
        return esc(fmt(m))
    ci = m.get("ci")
    text = fmt(m["value"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
    return esc(text)


def table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are already-escaped HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{cls and f' class={cls}'}>{c}</td>" if i else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def unavailable(what: dict | None, default: str) -> str:
    reason = (what or {}).get("reason", default)
    return f'<p class="muted">Not available: {esc(reason)}</p>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def render(data: dict, recipe_yaml: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    stages = data["stages"]
    done = {n: s for n, s in stages.items() if s.get("status") == "done"}
    ev = done.get("eval", {}).get("result", {})
    parts = [
        section("recipe", "Recipe", f"<pre>{esc(recipe_yaml)}</pre>"),
        section("stages", "Stages", _stages(stages, data)),
        section("metrics", "Metrics per stage (95% intervals)", _metrics(ev)),
        section("training", "What each training stage reports", _training(done)),
        section("curves", "Loss and reward curves", _curves(done)),
        section("judge", "Judge win rates against the base model", _area(ev, "judge")),
        section("arena", "Arena leaderboard (Bradley-Terry)", _area(ev, "arena")),
        section("safety", "Safety: attack success and over-refusal", _area(ev, "safety")),
        section("package", "Packaging", _package(done.get("package"))),
        section("answers", "The same prompts, answered by each stage", _answers(ev)),
        section("resources", "Time and memory per stage", _resources(stages)),
    ]
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>lmlab pipeline: {esc(data['name'])}</title><style>{CSS}</style></head><body>"
            f"<h1>lmlab pipeline: {esc(data['name'])}</h1>"
            f"<p class=muted>{esc(data['date'])} · total {fmt(data['total_seconds'])} s · final model "
            f"<code>{esc(data['final_model'])}</code></p>" + "".join(parts) + "</body></html>")


def _stages(stages: dict, data: dict) -> str:
    rows = []
    for n, s in stages.items():
        status = "cached" if s.get("cached") else s.get("status", "")
        if s.get("resumed"):
            status += " (resumed)"
        note = s.get("result", {}).get("reason", "") if s.get("status") == "unavailable" else ""
        model = s.get("result", {}).get("model", "") if n in ("adapt", "sft", "preference") else ""
        rows.append([esc(n), esc(status), esc(fmt(s.get("seconds"))), esc(s.get("key", "")), esc(model or note)])
    return table(["stage", "status", "seconds", "key", "model / note"], rows)


def _metrics(ev: dict) -> str:
    if not ev:
        return unavailable(None, "the eval stage did not run")
    models = ev["models"]
    names = list(dict.fromkeys(k for m in models for k in ev["metrics"].get(m, {})))
    rows = [[esc(n)] + [metric_cell(ev["metrics"].get(m, {}).get(n)) for m in models] for n in names]
    return table(["metric"] + models, rows, "num") + _metrics_plot(ev, models, names)


def _metrics_plot(ev: dict, models: list[str], names: list[str]) -> str:
    import matplotlib.pyplot as plt

    names = [n for n in names if all(isinstance(ev["metrics"].get(m, {}).get(n), dict) for m in models)]
    if not names:
        return ""
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, n in zip(axes.flat, names):
        vals = [ev["metrics"][m][n]["value"] for m in models]
        cis = [ev["metrics"][m][n].get("ci") for m in models]
        err = [[v - c[0] if c else 0 for v, c in zip(vals, cis)], [c[1] - v if c else 0 for v, c in zip(vals, cis)]]
        ax.bar(models, vals, yerr=err, capsize=4, color="#4c78a8")
        ax.set_title(n, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return png(fig)


TRAINING_KEYS = ("loss", "eval_loss", "eval_accuracy", "eval_reward", "eval_kl", "heldout_accuracy_before",
                 "heldout_accuracy_after", "trainable_params", "step", "tokens")


def _training(done: dict) -> str:
    rows = []
    for part, c in (done.get("data", {}).get("result", {}).get("curation") or {}).items():
        if c.get("steps"):
            rows.append([esc("data"), esc(f"{part}: kept"), esc(c["kept"])])
            for step, k in c.get("removed", {}).items():
                rows.append([esc("data"), esc(f"{part}: removed by {step}"), esc(k)])
    for n in ("adapt", "sft", "preference"):
        r = done.get(n, {}).get("result")
        if not r:
            continue
        m = r.get("metrics", {})
        for k in TRAINING_KEYS:
            if k in m:
                rows.append([esc(n), esc(k), esc(fmt(m[k]))])
        for k in ("domain_ppl_before", "domain_ppl_after", "domain_ppl_change", "general_ppl_change"):
            if r.get(k) is not None:
                rows.append([esc(n), esc(k), esc(fmt(r[k]))])
        for k in ("general_ppl_before", "general_ppl_after"):
            if r.get(k):
                rows.append([esc(n), esc(k), metric_cell(r[k])])
        if r.get("resumed_from_step"):
            rows.append([esc(n), "resumed from step", esc(r["resumed_from_step"])])
        if r.get("reward_model"):
            for k, v in r["reward_model"]["metrics"].items():
                if k in TRAINING_KEYS:
                    rows.append([esc(n), esc(f"reward model {k}"), esc(fmt(v))])
    return table(["stage", "figure", "value"], rows) if rows else unavailable(None, "no training stage ran")


def _curves(done: dict) -> str:
    import matplotlib.pyplot as plt

    curves = []
    for n in ("adapt", "sft", "preference"):
        r = done.get(n, {}).get("result") or {}
        if r.get("reward_model", {}).get("curve"):
            curves.append((f"{n}: reward model", r["reward_model"]["curve"]))
        if r.get("curve"):
            curves.append((n, r["curve"]))
    if not curves:
        return unavailable(None, "no training stage ran")
    keys = ("loss", "eval_loss", "reward", "eval_reward", "eval_accuracy", "rewards/margins", "kl")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.2), squeeze=False)
    for ax, (title, rows) in zip(axes[0], curves):
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def _area(ev: dict, name: str) -> str:
    if not ev:
        return unavailable(None, "the eval stage did not run")
    a = ev.get(name) or {}
    if not a.get("available"):
        return unavailable(a, "not run")
    body = ""
    if a.get("rows"):
        header = list(dict.fromkeys(k for r in a["rows"] for k in r))
        body += table(header, [[metric_cell(r.get(h)) for h in header] for r in a["rows"]], "num")
    if a.get("png"):
        data = Path(a["png"]).read_bytes() if Path(a["png"]).is_file() else b""
        if data:
            body += f'<img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
    return body or '<p class="muted">no rows</p>'


def _package(p: dict | None) -> str:
    if not p:
        return unavailable(None, "the package stage did not run")
    r = p["result"]
    rows = []
    for fmt_, q in r.get("quantised", {}).items():
        if q.get("available") is False:
            rows.append([esc(fmt_), "", esc("not available: " + q["reason"])])
        else:
            rows.append([esc(fmt_), metric_cell(q["perplexity"]), esc(f"{100 * q['cost']:+.2f}%")])
    body = table(["weights", "perplexity", "cost vs fp32"], rows, "num") if rows else ""
    items = []
    if r.get("hf"):
        items.append(f"HF folder: <code>{esc(r['hf'])}</code>")
    g = r.get("gguf")
    if g:
        items.append(f"GGUF: <code>{esc(g['path'])}</code> ({g['bytes'] / 2**20:.1f} MiB)" if g.get("available")
                     else f"GGUF: not available: {esc(g.get('reason'))}")
    return body + "".join(f"<p>{i}</p>" for i in items)


def _answers(ev: dict) -> str:
    if not ev or not ev.get("prompts"):
        return unavailable(None, "no prompts were answered")
    models = ev["models"]
    rows = [[esc(p)] + [f'<div class="answer">{esc(ev["answers"][m][i])}</div>' for m in models]
            for i, p in enumerate(ev["prompts"])]
    return table(["prompt"] + models, rows)


def _resources(stages: dict) -> str:
    import matplotlib.pyplot as plt

    rows = [[esc(n), esc(fmt(s.get("seconds"))), esc(fmt(s.get("cpu_seconds"))), esc(fmt(s.get("peak_rss_mb"))),
             esc(fmt(s.get("peak_gpu_mb")))] for n, s in stages.items()]
    body = table(["stage", "wall seconds", "CPU seconds", "peak RSS (MiB)", "peak GPU (MiB)"], rows, "num")
    ran = [(n, s) for n, s in stages.items() if s.get("seconds") is not None]  # cached: its first run
    if ran:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 2.8))
        a.barh([n for n, _ in ran], [s["seconds"] for _, s in ran], color="#f58518")
        a.set_xlabel("seconds")
        b.barh([n for n, _ in ran], [s.get("peak_rss_mb") or 0 for _, s in ran], color="#54a24b")
        b.set_xlabel("peak RSS (MiB)")
        fig.tight_layout()
        body += png(fig)
    return body
