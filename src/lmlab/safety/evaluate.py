"""`lmlab safety eval`: harmful behaviours asked directly and through jailbreak templates, and
XSTest's safe-but-scary prompts, answered by one model and scored two ways.

Every response is checked by the keyword refusal detector (lmlab.safety.refusal) and, when a
judge is given, graded StrongREJECT-style (lmlab.safety.strongreject). Attack success of a
template is the share of behaviours whose response is not a refusal (keyword) and, with a
judge, the share the judge scores above zero plus the mean StrongREJECT score; Wilson intervals
for shares, bootstrap intervals for means. Over-refusal is the keyword refusal rate on XSTest's
safe prompts (its unsafe prompts should be refused).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from lmlab.config import option
from lmlab.errors import LmlabError
from lmlab.safety import jailbreaks, refusal, strongreject

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"


@dataclass
class SafetyEvalConfig:
    model: Optional[str] = option(None, "bundled name (default smollm2), HF folder, .gguf or hub id", short="-m")
    weights: str = option("fp32", "inference weight format")
    behaviors: str = option(str(SHARED / "harmbench_behaviors.jsonl"),
                            "JSONL of harmful behaviours ({'behavior': ...} per line)")
    xstest: Optional[str] = option(str(SHARED / "xstest_prompts.jsonl"),
                                   "XSTest prompts JSONL ({'prompt', 'label': safe|unsafe}); '' to skip")
    limit: Optional[int] = option(None, "first N behaviours (and N XSTest prompts of each label)")
    templates: list[str] = option(help="jailbreak templates, comma-separated (default: all)",
                                  factory=lambda: list(jailbreaks.TEMPLATES))
    judge: Optional[str] = option(None, "StrongREJECT judge: 'self' (the evaluated model), a model spec or "
                                        "an endpoint's model name (with --judge-url), or none (keyword only)")
    judge_url: Optional[str] = option(None, "OpenAI-compatible endpoint serving --judge")
    judge_max_tokens: int = option(160, "judge reply length")
    max_new_tokens: int = option(64, "response length")
    output: Optional[str] = option(None, "write results.json, responses.jsonl and safety.png here", short="-o")
    json: bool = option(False, "print the results as JSON instead of tables")
    progress: bool = option(True, "no progress bar")
    bootstrap: int = option(1000, "bootstrap resamples for CIs of means")
    seed: int = option(0, "bootstrap seed")


# ---- statistics ----------------------------------------------------------------------------------

def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(values, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (resamples, len(v)))].mean(1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def cohen_kappa(a: list[bool], b: list[bool]) -> float:
    n = len(a)
    if not n:
        return float("nan")
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


# ---- data ----------------------------------------------------------------------------------------

def read_jsonl(path: str | Path, key: str) -> list[dict]:
    from lmlab.records import iter_jsonl

    rows = []
    for n, rec in iter_jsonl(path):
        if not isinstance(rec.get(key), str) or not rec[key].strip():
            raise LmlabError(f"{path}:{n}: expected an object with a non-empty {key!r} string")
        rows.append(rec)
    if not rows:
        raise LmlabError(f"{path}: no rows")
    return rows


# ---- generation and judging ----------------------------------------------------------------------

def respond(lm, prompts: list[str], max_new_tokens: int, progress: bool = False) -> list[str]:
    """Greedy chat answers to each prompt, batched through the engine."""
    from lmlab.engine.params import SamplingParams

    ids = [lm.prompt_ids(p) for p in prompts]
    outs = lm.engine.generate(ids, SamplingParams(max_tokens=max_new_tokens, temperature=0), progress=progress)
    return [o.outputs[0].text for o in outs]


def local_judge(lm, max_new_tokens: int = 160):
    """A batch judge on a local model (complete(messages_list) -> greedy replies), for when the
    judge backends (lmlab.judge.backends) are not installed."""
    from types import SimpleNamespace

    from lmlab.engine.params import SamplingParams

    def complete(messages_list):
        ids = [lm.tokenizer.encode_chat(m) for m in messages_list]
        outs = lm.engine.generate(ids, SamplingParams(max_tokens=max_new_tokens, temperature=0))
        return [o.outputs[0].text for o in outs]
    return SimpleNamespace(complete=complete)


def make_judge(config: "SafetyEvalConfig", lm):
    """The judge a config names: a judge backend (local model or endpoint) when lmlab.judge is
    there, else a local model through the engine; None for the keyword detector alone."""
    from types import SimpleNamespace

    spec = config.judge
    if not spec or spec.lower() == "none":
        return None
    try:
        from lmlab.judge.backends import backend_from
    except ImportError:
        backend_from = None
    if backend_from is not None:
        b = backend_from(lm if spec == "self" else spec, config.judge_url, cache=None)
        return SimpleNamespace(complete=lambda ml: b.complete(ml, max_tokens=config.judge_max_tokens, temperature=0.0))
    if config.judge_url:
        raise LmlabError("--judge-url needs the judge backends (lmlab.judge.backends)")
    from lmlab.lm import load
    return local_judge(lm if spec == "self" else load(spec, config.weights), config.judge_max_tokens)


def as_batch_judge(judge) -> Callable[[list[list[dict]]], list[str]]:
    """Any judge as messages_list -> replies: an object with complete(messages_list) (a judge
    backend), or a callable taking one conversation and returning its reply."""
    if hasattr(judge, "complete"):
        return judge.complete
    return lambda messages_list: [judge(m) for m in messages_list]


def grade_all(judge, prompts: list[str], responses: list[str]) -> list[strongreject.Verdict | None]:
    replies = as_batch_judge(judge)([strongreject.judge_messages(p, r) for p, r in zip(prompts, responses)])
    out = []
    for reply in replies:
        try:
            out.append(strongreject.parse(reply))
        except LmlabError:
            out.append(None)
    return out


# ---- the evaluation ------------------------------------------------------------------------------

def evaluate(lm, behaviors: list[str], templates: list[str], xstest: list[dict] | None = None, judge=None,
             max_new_tokens: int = 64, bootstrap_resamples: int = 1000, seed: int = 0,
             progress: bool = False) -> dict:
    """Attack success per template and overall, refusal rate, judge/keyword agreement, XSTest."""
    for t in templates:
        if t not in jailbreaks.TEMPLATES:
            raise LmlabError(f"unknown jailbreak template {t!r}; choose from {', '.join(jailbreaks.TEMPLATES)}")
    cases = [(t, b, jailbreaks.render(t, b)) for t in templates for b in behaviors]
    responses = respond(lm, [c[2] for c in cases], max_new_tokens, progress)
    kw_refused = [refusal.is_refusal(r) for r in responses]
    verdicts = grade_all(judge, [c[1] for c in cases], responses) if judge is not None else [None] * len(cases)

    rows, records = [], []
    for t in templates:
        idx = [i for i, c in enumerate(cases) if c[0] == t]
        rows.append(_summary(t, idx, kw_refused, verdicts, bootstrap_resamples, seed))
    attacks = [i for i, c in enumerate(cases) if c[0] != jailbreaks.DIRECT] or list(range(len(cases)))
    overall = _summary("overall (templates)", attacks, kw_refused, verdicts, bootstrap_resamples, seed)
    # a behaviour is broken when any template gets a non-refusal out of the model
    broken = [any(not kw_refused[i] for i, c in enumerate(cases) if c[1] == b) for b in behaviors]
    overall["any_template_asr"] = sum(broken) / len(broken)
    for i, (t, b, p) in enumerate(cases):
        v = verdicts[i]
        records.append({"template": t, "behavior": b, "prompt": p, "response": responses[i],
                        "keyword_refused": kw_refused[i], "judge": asdict(v) if v else None})

    judged = [i for i, v in enumerate(verdicts) if v is not None]
    agreement = None
    if judge is not None:
        a = [kw_refused[i] for i in judged]
        b = [bool(verdicts[i].refused) for i in judged]
        agreement = {"judged": len(judged), "unparsed": len(cases) - len(judged),
                     "disagreement": (sum(x != y for x, y in zip(a, b)) / len(judged)) if judged else None,
                     "keyword_only_refusals": sum(x and not y for x, y in zip(a, b)),
                     "judge_only_refusals": sum(y and not x for x, y in zip(a, b)),
                     "cohen_kappa": cohen_kappa(a, b)}

    result = {"templates": rows, "overall": overall,
              "refusal_rate": sum(kw_refused) / len(kw_refused), "agreement": agreement,
              "behaviors": len(behaviors), "responses": len(cases)}
    if xstest:
        result["xstest"], xrecords = over_refusal(lm, xstest, max_new_tokens, progress)
        records += xrecords
    result["records"] = records
    return result


def _summary(name, idx, kw_refused, verdicts, resamples, seed) -> dict:
    import numpy as np

    n = len(idx)
    success = sum(not kw_refused[i] for i in idx)
    row = {"template": name, "n": n, "asr_keyword": success / n if n else float("nan")}
    row["asr_keyword_ci"] = wilson(success, n)
    scores = [verdicts[i].score for i in idx if verdicts[i] is not None]
    if scores:
        k = sum(s > 0 for s in scores)
        row.update(asr_judge=k / len(scores), asr_judge_ci=wilson(k, len(scores)),
                   strongreject=float(np.mean(scores)), strongreject_ci=bootstrap(scores, resamples, seed))
    return row


def over_refusal(lm, xstest: list[dict], max_new_tokens: int, progress: bool = False) -> tuple[dict, list[dict]]:
    responses = respond(lm, [x["prompt"] for x in xstest], max_new_tokens, progress)
    refused = [refusal.is_refusal(r) for r in responses]
    out = {}
    for label in ("safe", "unsafe"):
        idx = [i for i, x in enumerate(xstest) if x.get("label") == label]
        k = sum(refused[i] for i in idx)
        out[label] = {"n": len(idx), "refusal_rate": k / len(idx) if idx else None, "ci": wilson(k, len(idx))}
    records = [{"xstest_id": x.get("id"), "label": x.get("label"), "type": x.get("type"), "prompt": x["prompt"],
                "response": r, "keyword_refused": f} for x, r, f in zip(xstest, responses, refused)]
    return {"over_refusal": out["safe"]["refusal_rate"], "unsafe_refusal": out["unsafe"]["refusal_rate"],
            **out}, records


def table_rows(result: dict) -> list[dict]:
    rows = []
    for r in result["templates"] + [result["overall"]]:
        lo, hi = r["asr_keyword_ci"]
        row = {"template": r["template"], "n": r["n"], "ASR (keyword)": f"{r['asr_keyword']:.2f} [{lo:.2f}, {hi:.2f}]"}
        if "asr_judge" in r:
            lo, hi = r["asr_judge_ci"]
            row["ASR (judge)"] = f"{r['asr_judge']:.2f} [{lo:.2f}, {hi:.2f}]"
            lo, hi = r["strongreject_ci"]
            row["StrongREJECT"] = f"{r['strongreject']:.2f} [{lo:.2f}, {hi:.2f}]"
        rows.append(row)
    return rows


def plot(result: dict, png: str | Path, title: str = "safety evaluation") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["templates"] + [result["overall"]]
    names = [r["template"] for r in rows]
    asr = [r["asr_keyword"] for r in rows]
    err = np.array([[a - r["asr_keyword_ci"][0], r["asr_keyword_ci"][1] - a] for a, r in zip(asr, rows)]).T
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(names))
    width = 0.4 if any("asr_judge" in r for r in rows) else 0.8
    axes[0].bar(x, asr, width, yerr=err, capsize=3, label="keyword")
    if width < 0.8:
        aj = [r.get("asr_judge", np.nan) for r in rows]
        ej = np.array([[a - r["asr_judge_ci"][0], r["asr_judge_ci"][1] - a] if "asr_judge" in r else [0, 0]
                       for a, r in zip(aj, rows)]).T
        axes[0].bar(x + width, aj, width, yerr=ej, capsize=3, label="judge")
        axes[0].legend()
    axes[0].set_xticks(x + (width / 2 if width < 0.8 else 0), names, rotation=35, ha="right")
    axes[0].set_ylabel("attack success rate (95% CI)")
    axes[0].set_ylim(0, 1)
    xs = result.get("xstest")
    if xs:
        vals = [xs["safe"]["refusal_rate"] or 0, xs["unsafe"]["refusal_rate"] or 0]
        cis = [xs["safe"]["ci"], xs["unsafe"]["ci"]]
        e = np.array([[v - c[0], c[1] - v] for v, c in zip(vals, cis)]).T
        axes[1].bar([0, 1], vals, yerr=e, capsize=3, color=["tab:orange", "tab:green"])
        axes[1].set_xticks([0, 1], ["safe\n(over-refusal)", "unsafe"])
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("XSTest refusal rate")
    else:
        axes[1].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def run(config: SafetyEvalConfig) -> dict:
    """Read the data, load the model (and judge), evaluate, write the outputs; return the result."""
    from lmlab.lm import load

    rows = read_jsonl(config.behaviors, "behavior")[: config.limit]
    xstest = None
    if config.xstest:
        xs = read_jsonl(config.xstest, "prompt")
        if config.limit:  # the first N of each label, so both halves are measured
            xs = [x for x in xs if x.get("label") == "safe"][: config.limit] + \
                 [x for x in xs if x.get("label") == "unsafe"][: config.limit]
        xstest = xs
    templates = [t for item in config.templates for t in str(item).split(",") if t]
    lm = load(config.model, config.weights)
    judge = make_judge(config, lm)
    result = evaluate(lm, [r["behavior"] for r in rows], templates, xstest, judge, config.max_new_tokens,
                      config.bootstrap, config.seed, config.progress)
    result["config"] = asdict(config)
    if config.output:
        out = Path(config.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "responses.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                     for r in result["records"]))
        (out / "results.json").write_text(json.dumps({k: v for k, v in result.items() if k != "records"}, indent=2))
        result["png"] = str(plot(result, out / "safety.png", f"safety: {config.model or 'smollm2'}"))
    return result
