"""The eval stage's calls into the judge, arena and safety areas (imported only when installed).

Judging: every model answers the same questions (MT-Bench first turns); a judge (the base model
unless `judge_model`) compares every pair of models on each question in both orders
(lmlab.arena.battles). Win rates against the base model are computed from the base model's
battles (lmlab.judge.winrate, AlpacaEval's definition, with its standard error); the arena
leaderboard is the Bradley-Terry fit over all battles (lmlab.arena.ratings, bootstrap intervals).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmlab.pipeline import metrics as M


def questions(cfg) -> list[dict]:
    from lmlab.judge.data import load_questions

    return load_questions(cfg.judge_questions)[: cfg.judge_prompts]


def answers(cfg, lm) -> dict:
    """question_id -> this model's answer (JSON keys are strings, so ids are kept as strings)."""
    from lmlab.judge.data import generate_answers

    return {str(k): v for k, v in generate_answers(lm, questions(cfg), max_tokens=cfg.max_new_tokens).items()}


def battles(cfg, ctx, folder: Path, per_model: dict) -> list[dict]:
    from lmlab.arena.battles import judge_battles, write_battles
    from lmlab.judge.backends import backend_from

    qs = [{**q, "question_id": str(q["question_id"])} for q in questions(cfg)]
    answers = {stage: done["judge_answers"] for stage, done in per_model.items()}
    backend = backend_from(cfg.judge_model or ctx.base_model, cache=folder / "judge.sqlite")
    rows = judge_battles(backend, qs, answers, models=list(per_model), max_tokens=cfg.judge_max_tokens)
    write_battles(rows, folder / "battles.jsonl")
    return rows


def win_rates(rows: list[dict], scores: dict) -> dict:
    """Each stage's win rate against the base model (ties count half), with a 95% interval;
    also added to that stage's metrics."""
    from lmlab.judge.winrate import from_verdicts, win_rates as rates

    out = []
    for stage in scores:
        if stage == "base":
            continue
        mine = [r for r in rows if {r["model_a"], r["model_b"]} == {"base", stage}]
        w = rates(from_verdicts(mine, baseline="base"))
        if w["win_rate"] is None:
            out.append({"model": stage, "win rate vs base": None, "n": 0})
            continue
        se = w["standard_error"] if w["standard_error"] == w["standard_error"] else None  # NaN: one judgment
        cell = M.from_mean(w["win_rate"] / 100, se / 100 if se is not None else None, w["n_total"])
        scores[stage]["judge win rate vs base"] = cell
        out.append({"model": stage, "win rate vs base": cell, "wins": w["n_wins"], "losses": w["n_wins_base"],
                    "ties": w["n_draws"], "n": w["n_total"]})
    errors = sum(r["winner"] == "error" for r in rows)
    return {"available": True, "rows": out, "battles": len(rows), "unparsed": errors}


def arena(rows: list[dict], folder: Path, bootstrap: int) -> dict:
    from lmlab.arena.leaderboard import rows as board, write_png
    from lmlab.arena.ratings import ratings

    kept = [r for r in rows if r["winner"] != "error"]
    if not kept:
        return {"available": False, "reason": "every judgment failed to parse"}
    result = ratings(kept, bootstrap=bootstrap)
    write_png(result, folder / "arena.png")
    (folder / "arena.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return {"available": True, "rows": board(result), "png": str(folder / "arena.png"),
            "n_battles": result["n_battles"]}


def safety(cfg, lm, seed: int) -> dict:
    """Attack success (keyword refusal detector) over the jailbreak templates and the over-refusal
    rate on XSTest's safe prompts, each with its Wilson interval (lmlab.safety.evaluate)."""
    from lmlab.safety.evaluate import evaluate, read_jsonl

    behaviors = [r["behavior"] for r in read_jsonl(cfg.safety_behaviors, "behavior")[: cfg.safety_limit]]
    xs = read_jsonl(cfg.safety_xstest, "prompt")
    xs = [x for x in xs if x.get("label") == "safe"][: cfg.safety_limit] + \
         [x for x in xs if x.get("label") == "unsafe"][: cfg.safety_limit]
    r = evaluate(lm, behaviors, list(cfg.safety_templates), xs, None, cfg.max_new_tokens, cfg.bootstrap, seed)
    o, safe = r["overall"], r["xstest"]["safe"]
    attack = {"value": o["asr_keyword"], "ci": list(o["asr_keyword_ci"]), "n": o["n"]}
    over = {"value": safe["refusal_rate"], "ci": list(safe["ci"]), "n": safe["n"]}
    return {"attack_success": attack, "over_refusal": over,
            "row": {"attack success (keyword)": attack, "over-refusal (XSTest safe)": over,
                    "refusal rate": r["refusal_rate"], "responses": r["responses"]}}
