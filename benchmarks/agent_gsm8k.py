"""The agent on GSM8K dev with the calculator and Python tools against the same model without
tools (exact match, model turns, tool calls, tool errors), and on a few SQL questions over the
example shop database with the sql tool.

    .venv/bin/python benchmarks/agent_gsm8k.py --limit 20
    .venv/bin/python benchmarks/agent_gsm8k.py --limit 200 --max-steps 6

Exact match: the last number of the final answer (commas removed) equals the number after "####"
in the GSM8K answer. No tools: one greedy answer to the same question with "solve step by step".
With tools: the ReAct loop (lmlab.agents), greedy, `--max-steps` model turns; a run that hits the
budget scores 0. The SQL part needs lmlab.apps.sql (its example database); the gold answers come
from running the gold query on that database.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NO_TOOLS = "Solve the problem step by step. End with: The answer is <number>."
SQL_QUESTIONS = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers"),
    ("How many customers live in London?", "SELECT COUNT(*) FROM customers WHERE city = 'London'"),
    ("What is the price of the most expensive product?", "SELECT MAX(price) FROM products"),
    ("How many orders have status 'delivered'?", "SELECT COUNT(*) FROM orders WHERE status = 'delivered'"),
    ("Which country is the customer Hana Sato from?", "SELECT country FROM customers WHERE name = 'Hana Sato'"),
]


def last_number(text: str | None) -> str | None:
    if not text:
        return None
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    if not nums:
        return None
    n = nums[-1].replace(",", "").rstrip(".")
    return n[:-2] if n.endswith(".0") else n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--model", default=None)
    ap.add_argument("--weights", default="fp32", help="fp32 | bf16 | int8 | w8a8 | int4")
    ap.add_argument("--trace", default=None, help="folder for the agent's trace.jsonl and transcript.txt")
    args = ap.parse_args()

    from lmlab.agents import Agent, lm_model, make_tools
    from lmlab.lm import load
    from lmlab.report.table import print_table

    rows = [json.loads(line) for line in open(DATA / "gsm8k_test_dev200.jsonl")][:args.limit]
    lm = load(args.model, args.weights)
    model = lm_model(lm, args.max_new_tokens)
    trace = args.trace or tempfile.mkdtemp(prefix="agent_gsm8k_")
    agent = Agent(model, make_tools("calculator,python"), args.max_steps, trace)
    plain = {"correct": 0, "seconds": 0.0}
    tools = {"correct": 0, "seconds": 0.0, "turns": 0, "calls": 0, "errors": 0, "finished": 0}
    from tqdm import tqdm

    from lmlab.engine.params import SamplingParams

    golds = [r["answer"].split("####")[-1].strip().replace(",", "") for r in rows]
    t0 = time.perf_counter()  # the baseline in one engine batch: the same greedy answers, faster
    outs = lm.engine.generate([lm.prompt_ids(r["question"], system=NO_TOOLS) for r in rows],
                              SamplingParams(max_tokens=args.max_new_tokens, temperature=0.0), progress=True)
    plain["seconds"] = time.perf_counter() - t0
    plain["correct"] = sum(last_number(o.outputs[0].text) == g for o, g in zip(outs, golds))
    for r, gold in tqdm(list(zip(rows, golds)), desc="agent", unit="problem"):
        t0 = time.perf_counter()
        res = agent.run(r["question"])
        tools["seconds"] += time.perf_counter() - t0
        tools["correct"] += last_number(res.answer) == gold
        tools["turns"] += res.model_turns
        tools["calls"] += res.tool_calls
        tools["errors"] += res.tool_errors
        tools["finished"] += res.finished
    n = len(rows)
    print_table([
        {"setting": "no tools (one batch)", "exact match": plain["correct"] / n, "s/problem": plain["seconds"] / n},
        {"setting": f"agent: calculator+python, {args.max_steps} steps", "exact match": tools["correct"] / n,
         "s/problem": tools["seconds"] / n, "model turns/problem": tools["turns"] / n,
         "tool calls": tools["calls"], "tool errors": tools["errors"], "answered": f"{tools['finished']}/{n}"},
    ], title=f"GSM8K dev, first {n} problems, bundled model, greedy")
    print(f"agent trace: {trace}/trace.jsonl, {trace}/transcript.txt")

    try:
        from lmlab.apps.sql import example_db
    except ImportError:
        print("SQL questions skipped: lmlab.apps.sql (the example database) is not in this tree")
        return 0
    from lmlab.agents.tools import run_sql

    db = example_db(Path(tempfile.mkdtemp()) / "shop.sqlite")
    agent = Agent(model, make_tools("sql", db=db), args.max_steps, trace)
    correct = calls = errors = 0
    for question, gold_sql in SQL_QUESTIONS:
        gold = str(run_sql(db, gold_sql)[1][0][0])
        res = agent.run(question)
        answer = res.answer or ""
        g = last_number(gold) if last_number(gold) else gold.lower()
        correct += (last_number(answer) == g) if last_number(gold) else (g in answer.lower())
        calls += res.tool_calls
        errors += res.tool_errors
    print_table([{"questions": len(SQL_QUESTIONS), "correct": correct, "tool calls": calls, "tool errors": errors}],
                title="SQL questions over the example shop database, agent with the sql tool")
    return 0


if __name__ == "__main__":
    import _results

    sys.exit(_results.run(main))
