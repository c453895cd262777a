"""eval: one suite, run the same way on the base model and on every training stage's model.

Per model: HellaSwag and GSM8K slices (lmlab.eval), the FLAN held-out clusters (lmlab.train.flan:
clusters the sft stage never trained on), perplexity of a held-out text, and greedy answers to
the recipe's prompts (shown side by side in the report). Across models, when those areas are
installed: judge win rates against the base model (lmlab.judge), Bradley-Terry arena ratings
over every stage (lmlab.arena), attack success and over-refusal (lmlab.safety).

Each model's scores are cached by the eval settings and that model's files, so a re-run after a
change to one training stage scores only the models that changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

from lmlab.pipeline import metrics as M

AREAS = {"judge": "lmlab.judge", "arena": "lmlab.arena", "safety": "lmlab.safety"}


def inputs(cfg, recipe) -> list[tuple[str, str]]:
    out = []
    if cfg.hellaswag:
        out.append(("hellaswag data", cfg.hellaswag_data))
    if cfg.gsm8k:
        out.append(("gsm8k data", cfg.gsm8k_data))
    if cfg.perplexity:
        out.append(("perplexity text", cfg.perplexity))
    if (cfg.judge or cfg.arena) and available("judge"):
        out.append(("judge questions", cfg.judge_questions))
    if cfg.safety and available("safety"):
        out += [("safety behaviours", cfg.safety_behaviors), ("XSTest prompts", cfg.safety_xstest)]
    return out


def available(area: str) -> bool:
    try:
        return importlib.util.find_spec(AREAS[area]) is not None
    except ModuleNotFoundError:
        return False


def environment() -> dict:
    """Which optional areas are installed: part of this stage's key, so that installing one re-runs it."""
    return {a: available(a) for a in AREAS}


def holdout(recipe) -> list[str]:
    sft = recipe.stages.sft
    return list(sft.holdout) if sft else ["classification", "extraction"]


def run(cfg, ctx, folder: Path) -> dict:
    from tqdm import tqdm

    from lmlab.pipeline.runner import fingerprint

    models = ctx.models()
    scores, answers, per_model = {}, {}, {}
    for stage, spec in tqdm(models, desc="eval: models", unit="model", dynamic_ncols=True):
        settings = {"eval": dataclasses.asdict(cfg), "model": spec, "seed": ctx.recipe.seed,
                    "files": fingerprint(spec) if Path(spec).exists() else None, "holdout": holdout(ctx.recipe),
                    "engine": ctx.recipe.engine, "areas": environment()}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        path = folder / "models" / f"{stage}-{key}.json"
        if path.is_file():
            done = json.loads(path.read_text(encoding="utf-8"))
        else:
            done = score_model(cfg, ctx, spec, folder / "work" / stage)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(done, indent=1), encoding="utf-8")
        scores[stage], answers[stage] = done["metrics"], done["answers"]
        per_model[stage] = done
    out = {"models": [s for s, _ in models], "model_paths": dict(models), "metrics": scores,
           "prompts": list(cfg.prompts), "answers": answers}
    off = {"available": False, "reason": "off in the recipe"}
    out["judge"], out["arena"] = off, off
    if cfg.judge or cfg.arena:
        if not available("judge"):
            out["judge"] = out["arena"] = _missing("judge")
        else:
            from lmlab.pipeline.stages import judging

            judged = judging.battles(cfg, ctx, folder, per_model)
            if cfg.judge:
                out["judge"] = judging.win_rates(judged, scores)
            if cfg.arena:
                out["arena"] = (judging.arena(judged, folder, cfg.bootstrap) if available("arena")
                                else _missing("arena"))
    out["safety"] = off
    if cfg.safety:
        out["safety"] = ({"available": True, "rows": [{"model": s, **per_model[s]["safety"]["row"]} for s in per_model]}
                         if available("safety") else _missing("safety"))
    return out


def score_model(cfg, ctx, spec: str, work: Path) -> dict:
    from lmlab.eval.runner import evaluate
    from lmlab.lm import load

    lm = load(spec, workload="scoring")  # every stage in the same exact format
    m = {}
    if cfg.hellaswag:
        r = evaluate(lm, "hellaswag", data=cfg.hellaswag_data, limit=cfg.hellaswag, seed=ctx.recipe.seed,
                     output_dir=work / "hellaswag")["results"]["hellaswag"]
        m["hellaswag acc"] = M.rate(r["acc"], r["n"])
        m["hellaswag acc_norm"] = M.rate(r["acc_norm"], r["n"])
    if cfg.gsm8k:
        r = evaluate(lm, "gsm8k", data=cfg.gsm8k_data, limit=cfg.gsm8k, seed=ctx.recipe.seed,
                     max_new_tokens=cfg.gsm8k_max_new_tokens, output_dir=work / "gsm8k")["results"]["gsm8k"]
        m["gsm8k exact_match"] = M.rate(r["exact_match"], r["n"])
    if cfg.flan_per_family:
        from lmlab.train.flan import accuracy, make_data

        # The same held-out records for every model: the data depends only on the seed and clusters.
        _, held = make_data(1, holdout(ctx.recipe), ctx.recipe.seed, cfg.flan_per_family)
        _, rows = accuracy(lm, held)
        m["flan held-out exact_match"] = M.proportion([r["correct"] for r in rows])
        for cluster in sorted({r["cluster"] for r in rows}):
            m[f"flan {cluster}"] = M.proportion([r["correct"] for r in rows if r["cluster"] == cluster])
    if cfg.perplexity:
        m["perplexity"] = M.perplexity(lm, cfg.perplexity, cfg.perplexity_limit, work / "perplexity",
                                       resamples=cfg.bootstrap)
    out = {"metrics": m, "answers": generate(lm, spec, list(cfg.prompts), cfg.max_new_tokens, ctx.recipe.engine)}
    if (cfg.judge or cfg.arena) and available("judge"):
        from lmlab.pipeline.stages import judging

        out["judge_answers"] = judging.answers(cfg, lm)
    if cfg.safety and available("safety"):
        from lmlab.pipeline.stages import judging

        out["safety"] = judging.safety(cfg, lm, ctx.recipe.seed)
        m["attack success (keyword)"] = out["safety"]["attack_success"]
        m["over-refusal (XSTest safe)"] = out["safety"]["over_refusal"]
    return out


def generate(lm, spec: str, prompts: list[str], max_new_tokens: int, engine: str = "lmlab") -> list[str]:
    """Greedy answers through the chat template: lmlab's Engine, or vLLM's (engine: vllm)."""
    ids = [lm.prompt_ids(p) for p in prompts]
    if not ids:
        return []
    if engine == "vllm":
        from lmlab.serve.vllm_runner import import_vllm

        vllm = import_vllm()
        llm = vllm.LLM(model=str(lm.folder), dtype="float32")
        outs = llm.generate([{"prompt_token_ids": p} for p in ids],
                            vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
        return [o.outputs[0].text for o in outs]
    from lmlab.engine.params import SamplingParams

    outs = lm.engine.generate(ids, SamplingParams(max_tokens=max_new_tokens, temperature=0.0))
    return [o.outputs[0].text for o in outs]


# ---- the optional areas: each reported as not available until it is installed --------------------

def _missing(area: str) -> dict:
    return {"available": False, "reason": f"{AREAS[area]} is not installed in this build"}
