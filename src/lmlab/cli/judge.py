"""`lmlab judge ...` and `lmlab arena ...`: argument parsing only; the work is done by
lmlab.judge and lmlab.arena."""

from __future__ import annotations

import json


def _judge_flags(p) -> None:
    g = p.add_argument_group("judge backend")
    g.add_argument("--judge-model", default=None,
                   help="local: a model lmlab loads (bundled name, HF folder, .gguf; default smollm2); "
                        "with --judge-url: the model name the endpoint serves")
    g.add_argument("--judge-url", default=None, help="an OpenAI-compatible endpoint (lmlab serve, vLLM, llama.cpp)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's key")
    g.add_argument("--concurrency", type=int, default=8, help="endpoint requests in flight")
    g.add_argument("--guided", action="store_true", help="the endpoint takes vLLM's guided_choice / guided_regex")
    g.add_argument("--cache", default="default", help="SQLite cache of judgments (default $LMLAB_HOME/cache/judge.sqlite)")
    g.add_argument("--no-cache", action="store_true", help="judge again, keep nothing")
    g.add_argument("--judge-max-tokens", type=int, default=512, help="tokens per judgment")


def _data_flags(p) -> None:
    p.add_argument("--questions", required=True, help="MT-Bench question.jsonl (question_id, category, turns)")
    p.add_argument("--references", default=None, help="FastChat reference_answer JSONL (math, reasoning, coding)")
    p.add_argument("--answers", nargs="+", required=True, help="answer files (FastChat, AlpacaEval or plain rows)")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")


def _backend(args):
    from lmlab.judge.backends import backend_from

    cache = None if args.no_cache else args.cache
    if args.judge_url:
        return backend_from(args.judge_model, url=args.judge_url, api_key_env=args.api_key_env, cache=cache,
                            concurrency=args.concurrency, guided=args.guided)
    return backend_from(args.judge_model, cache=cache)


def _load(args):
    from lmlab.judge.data import load_answers, load_questions, load_references

    qs = load_questions(args.questions)[:args.limit]
    refs = load_references(args.references) if args.references else None
    return qs, load_answers(*args.answers), refs


def register(sub, common) -> None:
    j = sub.add_parser("judge", parents=[common], help="LLM-as-judge: grading, pairwise, G-Eval, bias, win rates")
    js = j.add_subparsers(dest="judge_cmd", required=True)

    a = js.add_parser("answer", parents=[common], help="answer the first turns of a question set with a model")
    a.add_argument("--model", "-m", default=None, help="bundled name, HF folder, .gguf, adapter folder")
    a.add_argument("--questions", required=True)
    a.add_argument("--name", default=None, help="model name in the answer file (default: the model's folder name)")
    a.add_argument("--system", default=None, help="a system prompt")
    a.add_argument("--max-tokens", type=int, default=512)
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--out", required=True, help="answer file to write (FastChat model_answer shape)")
    a.set_defaults(func=cmd_answer)

    s = js.add_parser("single", parents=[common], help="MT-Bench single-answer grading, 1-10 (reference-guided "
                                                       "for math, reasoning, coding)")
    _data_flags(s)
    s.add_argument("--model", default=None, help="grade this model's answers (default: every model)")
    s.add_argument("--geval", action="store_true", help="G-Eval: the probability-weighted score instead")
    s.add_argument("--out", default=None, help="JSONL of the grades")
    s.add_argument("--json", action="store_true")
    _judge_flags(s)
    s.set_defaults(func=cmd_single)

    p = js.add_parser("pairwise", parents=[common], help="model against a baseline, judged in both orders")
    _data_flags(p)
    p.add_argument("--model", required=True, help="the model under test")
    p.add_argument("--baseline", required=True, help="the model it is compared with")
    p.add_argument("--bias", action="store_true", help="also the bias report (position, length, verbosity attack)")
    p.add_argument("--self-model", default=None, help="with --bias: the judge's own model's name in the answers")
    p.add_argument("--out", default=None, help="verdicts JSONL (also a battles file for `lmlab arena ratings`)")
    p.add_argument("--png", default=None, help="leaderboard PNG of the two models")
    p.add_argument("--json", action="store_true")
    _judge_flags(p)
    p.set_defaults(func=cmd_pairwise)

    b = js.add_parser("bias", parents=[common], help="position and length bias of a verdicts file")
    b.add_argument("verdicts")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bias)

    w = js.add_parser("winrate", parents=[common], help="raw and length-controlled win rates of annotations",
                      description="ANNOTATIONS: AlpacaEval's annotations.json (output_1 = baseline) or our "
                                  "verdicts JSONL (then name --baseline unless there are two models).")
    w.add_argument("annotations")
    w.add_argument("--baseline", default=None)
    w.add_argument("--json", action="store_true", help="one JSON object (one per generator if several)")
    w.set_defaults(func=cmd_winrate)

    ar = sub.add_parser("arena", parents=[common], help="arena: battles, Bradley-Terry ratings, battle page")
    ars = ar.add_subparsers(dest="arena_cmd", required=True)
    r = ars.add_parser("ratings", parents=[common], help="rate the models of a battles JSONL")
    r.add_argument("battles")
    r.add_argument("--bootstrap", type=int, default=1000, help="bootstrap rounds for the 95%% intervals")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--style", action="store_true", help="also style-controlled ratings (length, markdown)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.add_argument("--out", default=None, help="write the JSON here")
    r.add_argument("--png", default=None, help="leaderboard PNG with intervals")
    r.add_argument("--html", default=None, help="leaderboard HTML page")
    r.set_defaults(func=cmd_ratings)

    aj = ars.add_parser("judge", parents=[common], help="battles between models, judged over a question set")
    _data_flags(aj)
    aj.add_argument("--models", default=None, help="comma-separated (default: every model in the answers)")
    aj.add_argument("--out", required=True, help="battles JSONL")
    _judge_flags(aj)
    aj.set_defaults(func=cmd_arena_judge)

    pg = ars.add_parser("page", parents=[common], help="the battle page: people vote between anonymous answers")
    _data_flags(pg)
    pg.add_argument("--db", default="arena_votes.sqlite", help="SQLite file of battles and votes")
    pg.add_argument("--host", default="127.0.0.1")
    pg.add_argument("--port", type=int, default=8000)
    pg.set_defaults(func=cmd_page)


# ---- judge -----------------------------------------------------------------------------------

def cmd_answer(args) -> int:
    from pathlib import Path

    from lmlab.judge.data import generate_answers, load_questions, write_answers
    from lmlab.lm import load

    qs = load_questions(args.questions)[:args.limit]
    lm = load(args.model)
    name = args.name or (Path(args.model).name if args.model else "smollm2")
    write_answers(args.out, name, generate_answers(lm, qs, system=args.system, max_tokens=args.max_tokens))
    print(f"wrote {len(qs)} answers of {name} to {args.out}")
    return 0


def _write_jsonl(rows, path):
    from lmlab.arena.battles import write_battles

    write_battles(rows, path)


def cmd_single(args) -> int:
    import numpy as np

    from lmlab.judge import grading
    from lmlab.judge.bias import bootstrap_ci
    from lmlab.report.table import print_table

    qs, answers, refs = _load(args)
    models = [args.model] if args.model else sorted(answers)
    if args.model and args.model not in answers:
        from lmlab.errors import LmlabError
        raise LmlabError(f"model {args.model!r} has no answers in {', '.join(args.answers)} "
                         f"(models with answers: {', '.join(sorted(answers))})")
    backend = _backend(args)
    table, all_rows = [], []
    for m in models:
        rows = (grading.geval(backend, qs, answers[m]) if args.geval
                else grading.single(backend, qs, answers[m], refs, max_tokens=args.judge_max_tokens))
        scores = [r["score"] for r in rows if r["score"] is not None]
        est, lo, hi = bootstrap_ci(scores) if scores else (float("nan"),) * 3
        table.append({"model": m, "score": est, "95% CI": f"{lo:.2f} - {hi:.2f}", "graded": len(scores),
                      "parse failures": len(rows) - len(scores)})
        all_rows += [{**r, "model": m} for r in rows]
    if args.out:
        _write_jsonl(all_rows, args.out)
    if args.json:
        print(json.dumps(table))
    else:
        print_table(table, title="G-Eval scores" if args.geval else "MT-Bench single-answer grades (1-10)")
    return 0 if np.isfinite([t["score"] for t in table]).all() else 1


def _winrate_row(rows):
    from lmlab.judge.winrate import win_rates

    out = win_rates(rows)
    ok = out["n_total"] > 1
    out["ci95"] = ([out["win_rate"] - 1.96 * out["standard_error"], out["win_rate"] + 1.96 * out["standard_error"]]
                   if ok else [None, None])
    return out


def cmd_pairwise(args) -> int:
    from lmlab.arena.battles import check_models
    from lmlab.judge import bias, grading
    from lmlab.judge.winrate import from_verdicts
    from lmlab.report.table import print_kv, print_table

    qs, answers, refs = _load(args)
    check_models([args.model, args.baseline], answers)
    backend = _backend(args)
    rows = grading.pairwise(backend, qs, answers, args.model, args.baseline, refs, max_tokens=args.judge_max_tokens)
    if args.out:
        _write_jsonl(rows, args.out)
    result = {"judge": backend.name, "model": args.model, "baseline": args.baseline,
              "parse_failures": grading.failures(rows),
              **_winrate_row(from_verdicts(rows, args.baseline))}
    if args.bias:
        result["bias"] = bias.position_report(rows)
        items = [{"question": q["question"], "answer": answers[args.model][q["question_id"]],
                  "question_id": q["question_id"]} for q in qs if q["question_id"] in answers[args.model]]
        result["bias"]["verbosity_attack"] = bias.verbosity_attack(backend, items, max_tokens=args.judge_max_tokens)
        if args.self_model:
            result["bias"]["self_preference"] = bias.self_preference(rows, args.self_model)
    if args.png:
        from lmlab.arena.leaderboard import write_png
        from lmlab.arena.ratings import ratings

        write_png(ratings(rows), args.png)
    if args.json:
        print(json.dumps(result))
        return 0
    lo, hi = result["ci95"]

    def f(x, d=1):
        return "n/a" if x is None else round(x, d)
    print_kv({"judge": result["judge"], "model": args.model, "baseline": args.baseline,
              "win_rate": f"{f(result['win_rate'])} (95% CI {f(lo)} - {f(hi)})",
              "standard_error": f(result["standard_error"], 2),
              "length_controlled_winrate": f(result["length_controlled_winrate"]),
              "n_total": result["n_total"], "wins / draws / losses":
              f"{result['n_wins']} / {result['n_draws']} / {result['n_wins_base']}",
              "parse_failures": result["parse_failures"]}, title="pairwise, both orders (MT-Bench rule)")
    if args.bias:
        print_table(_bias_rows(result["bias"]), title="bias report (bootstrap 95% CI)")
    if args.png:
        print(f"wrote {args.png}")
    return 0


def _bias_rows(rep: dict) -> list[dict]:
    out = []
    figures = dict(rep)
    figures.update(rep.get("verbosity_attack", {}))
    figures.update(rep.get("self_preference", {}))
    for k, v in figures.items():
        if isinstance(v, dict) and "value" in v:
            out.append({"measure": k, "value": v["value"], "95% CI": f"{v['lower']:.3f} - {v['upper']:.3f}",
                        "n": v["n"]})
    out.append({"measure": "parse_failures", "value": rep["parse_failures"], "n": rep["judgments"]})
    return out


def cmd_bias(args) -> int:
    from lmlab.judge.bias import position_report
    from lmlab.judge.data import read_jsonl
    from lmlab.report.table import print_table

    rows = []
    for n, r in read_jsonl(args.verdicts):
        missing = [k for k in ("g1", "g2", "output_a", "output_b") if k not in r]
        if missing:
            from lmlab.errors import LmlabError
            raise LmlabError(f"{args.verdicts}:{n}: a verdict needs {', '.join(missing)} "
                             f"(write it with `lmlab judge pairwise --out`)")
        rows.append(r)
    rep = position_report(rows)
    if args.json:
        print(json.dumps(rep))
    else:
        print_table(_bias_rows(rep), title="bias report (bootstrap 95% CI)")
    return 0


def cmd_winrate(args) -> int:
    from lmlab.judge.winrate import by_generator, read_annotations
    from lmlab.report.table import print_table

    res = by_generator(read_annotations(args.annotations, args.baseline))
    keys = ("win_rate", "standard_error", "length_controlled_winrate", "n_total")
    if args.json:
        out = {g: {k: r[k] for k in keys} for g, r in res.items()}
        print(json.dumps(next(iter(out.values())) if len(out) == 1 else out))
    else:
        print_table([{"generator": g, **{k: r[k] for k in keys}, "n_wins": r["n_wins"], "n_draws": r["n_draws"],
                      "avg_length": round(r["avg_length"])} for g, r in res.items()], title="win rates")
    return 0


# ---- arena -----------------------------------------------------------------------------------

def cmd_ratings(args) -> int:
    from lmlab.arena import leaderboard
    from lmlab.arena.ratings import ratings, read_battles, write_json

    result = ratings(read_battles(args.battles), bootstrap=args.bootstrap, seed=args.seed, style=args.style)
    if args.out:
        write_json(result, args.out)
    if args.png:
        leaderboard.write_png(result, args.png)
    if args.html:
        leaderboard.write_html(result, args.html)
    if args.json:
        print(json.dumps(result))
    else:
        leaderboard.print_leaderboard(result)
    return 0


def cmd_arena_judge(args) -> int:
    from lmlab.arena.battles import check_models, judge_battles, write_battles

    qs, answers, refs = _load(args)
    models = args.models.split(",") if args.models else sorted(answers)
    check_models(models, answers, ", ".join(args.answers))  # before loading a judge
    rows = judge_battles(_backend(args), qs, answers, models, refs, max_tokens=args.judge_max_tokens)
    write_battles(rows, args.out)
    errors = sum(r["winner"] == "error" for r in rows)
    print(f"wrote {len(rows)} battles to {args.out} ({errors} with a verdict that did not parse)")
    return 0


def cmd_page(args) -> int:
    import uvicorn

    from lmlab.arena.page import create_app

    qs, answers, _ = _load(args)
    print(f"battle page on http://{args.host}:{args.port}/ (votes in {args.db})")
    uvicorn.run(create_app(qs, answers, args.db), host=args.host, port=args.port, log_level="warning")
    return 0

