"""`lmlab sql "question" --db file.sqlite`: text-to-SQL under a grammar of the database's own
names, run read-only (lmlab.apps.sql does the work)."""

from __future__ import annotations

import argparse
import json


def register(sub, common) -> None:
    s = sub.add_parser("sql", parents=[common], help="ask a SQLite database a question (text-to-SQL, read-only)",
                       description="Reads the database's schema, generates a SELECT that may name only its "
                                   "tables and columns (grammar-constrained), runs it read-only and prints the "
                                   "rows. Without --db, the example shop database in $LMLAB_HOME/sql is used.")
    s.add_argument("question", nargs="?", default=None)
    s.add_argument("--db", default=None, help="SQLite file (default: the example shop database)")
    s.add_argument("--example-db", metavar="PATH", default=None,
                   help="write the example shop database to PATH (and answer the question on it, if given)")
    s.add_argument("--model", "-m", default=None,
                   help="bundled name (default smollm2), HF folder, .gguf file or hub id org/name")
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--timeout", type=float, default=5.0, help="seconds a query may run")
    s.add_argument("--max-rows", type=int, default=100)
    s.add_argument("--show-grammar", action="store_true", help="print the grammar the query is held to")
    s.add_argument("--json", action="store_true", help="print one JSON object {question, sql, columns, rows}")
    s.set_defaults(func=cmd_sql)


def cmd_sql(args: argparse.Namespace) -> int:
    from lmlab.apps import sql
    from lmlab.errors import LmlabError

    if args.example_db:
        path = sql.example_db(args.example_db)
        if args.question is None:
            print(f"wrote {path}")
            return 0
    db = args.db or args.example_db or sql.default_db()
    if args.show_grammar:
        print(sql.grammar(sql.read_schema(db)))
        if args.question is None:
            return 0
    if args.question is None:
        raise LmlabError("give a question, e.g. lmlab sql \"How many customers live in London?\" --db shop.sqlite")
    from lmlab.lm import load

    answer = sql.ask(load(args.model), args.question, db, max_tokens=args.max_new_tokens, timeout=args.timeout,
                     max_rows=args.max_rows)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, default=str))
        return 0
    from lmlab.report.table import print_table

    print(answer.sql)
    if answer.rows:
        print_table([dict(zip(answer.columns, r)) for r in answer.rows])
    else:
        print("(no rows)")
    return 0
