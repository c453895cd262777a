"""data: curate the SFT and preference data with lmlab.data's pipeline (`lmlab data curate`):
exact dedup, and decontamination against the evaluation sets the eval stage uses (its HellaSwag
and GSM8K files and the FLAN held-out records). Without that area the stage is reported as not
available and the training stages read their raw data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from lmlab.pipeline.runner import Unavailable


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    out = [] if cfg.sft == "flan" else [("sft data", cfg.sft)]
    return out + [("preference pairs", cfg.preference)]


def environment() -> dict:
    return {"lmlab.data": _installed()}


def _installed() -> bool:
    try:
        return importlib.util.find_spec("lmlab.data.pipeline") is not None
    except ModuleNotFoundError:
        return False


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def eval_files(ctx, folder: Path) -> list[str]:
    """The test items the later eval stage scores: what the training data must not contain."""
    from lmlab.train.flan import make_data

    r = ctx.recipe
    files = []
    ev = r.stages.eval
    if ev is not None:
        files += [f for n, f in ((ev.hellaswag, ev.hellaswag_data), (ev.gsm8k, ev.gsm8k_data)) if n]
        if ev.flan_per_family:
            holdout = list(r.stages.sft.holdout) if r.stages.sft else ["classification", "extraction"]
            _, held = make_data(1, holdout, r.seed, ev.flan_per_family)
            files.append(_jsonl(folder / "eval" / "flan_heldout.jsonl", held))
    return files


def curate_one(cfg, source: str, text_field: str, out: Path, against: list[str]) -> dict:
    from lmlab.config import load_config
    from lmlab.data.config import CurateConfig
    from lmlab.data.pipeline import curate

    steps = (["decontaminate"] if cfg.decontaminate and against else []) + (["exact_dedup"] if cfg.dedup else [])
    if not steps:
        return {"data": source, "steps": []}
    c = load_config(CurateConfig, None, None, inputs=[source], out=str(out), steps=steps, text_field=text_field,
                    workers=1, overwrite=True, **{"decontaminate.files": against, "decontaminate.ngram": cfg.ngram})
    report = curate(c)
    kept = out.parent / f"{out.name}.jsonl"
    with kept.open("w", encoding="utf-8") as f:
        for part in sorted((out / "data").glob("part-*.jsonl")):
            for line in part.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if text_field != "text" and text_field not in rec and "text" in rec:
                        rec[text_field] = rec.pop("text")  # curation reads (and writes) the text as "text"
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    removed = {s: sum(1 for l in (out / "removed" / f"{s}.jsonl").read_text().splitlines() if l.strip())
               for s in steps if (out / "removed" / f"{s}.jsonl").is_file()}
    n_kept = sum(1 for l in kept.read_text(encoding="utf-8").splitlines() if l.strip())
    return {"data": str(kept), "steps": steps, "kept": n_kept, "removed": removed,
            "report": str(out / "report.html") if (out / "report.html").is_file() else None,
            "seconds": report.get("seconds") if isinstance(report, dict) else None}


def run(cfg, ctx, folder: Path) -> dict:
    if not _installed():
        raise Unavailable("lmlab.data (corpus curation, decontamination) is not installed in this build")
    against = eval_files(ctx, folder)
    source = cfg.sft
    if source == "flan":  # the built-in tasks, written out so that they can be curated
        from lmlab.train.flan import make_data

        sft = ctx.recipe.stages.sft
        holdout = list(sft.holdout) if sft else ["classification", "extraction"]
        train, _ = make_data(sft.per_family if sft else 40, holdout, ctx.recipe.seed, 0)
        source = _jsonl(folder / "raw" / "flan_train.jsonl", train)
    s = curate_one(cfg, source, "prompt", folder / "sft", against)
    p = curate_one(cfg, cfg.preference, "chosen", folder / "preference", against)
    return {"sft": s["data"], "preference": p["data"], "against": against,
            "curation": {"sft": s, "preference": p}}
