"""Tools an agent can call: a calculator (arithmetic by a safe AST walk, no eval), Python in the
evaluation sandbox, search over a RAG index, and read-only SQL on SQLite.

A Tool is a name, a description, a JSON schema for its arguments (the OpenAI `tools` shape, so the
same tools can be offered through the server's tool calling) and a function of those arguments
returning text. The agent loop validates arguments against the schema before calling.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmlab.errors import LmlabError

NAMES = ("calculator", "python", "search", "sql")


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    fn: Callable[..., str]
    timeout: float = 10.0  # seconds the loop waits for a result

    def spec(self) -> dict:
        """The OpenAI `tools` entry."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def _object(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


# ---- calculator ----------------------------------------------------------------------------------

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "log": math.log, "log10": math.log10, "exp": math.exp, "sin": math.sin,
          "cos": math.cos, "tan": math.tan, "abs": abs, "round": round, "min": min, "max": max,
          "floor": math.floor, "ceil": math.ceil}
_CONSTS = {"pi": math.pi, "e": math.e}


def calculate(expression: str) -> float | int:
    """Evaluate arithmetic: numbers, + - * / // % **, parentheses, a few math functions and
    constants. Anything else (names, attributes, calls of other things) is refused."""
    try:
        # "1,250" is a thousands separator (models write them), "^" a power
        tree = ast.parse(re.sub(r"(?<=\d),(?=\d{3}\b)", "", expression).replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise LmlabError(f"not an arithmetic expression: {expression!r} ({e.msg})") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(b) > 1000 or abs(a) > 1e100):
                raise LmlabError(f"power too large: {a} ** {b}")
            return _BINARY[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise LmlabError(f"not allowed in a calculator expression: {ast.unparse(node)!r} "
                         f"(numbers, + - * / // % **, parentheses, {', '.join(_FUNCS)}, pi, e)")

    try:
        value = ev(tree)
    except ZeroDivisionError:
        raise LmlabError(f"division by zero in {expression!r}") from None
    except (ValueError, OverflowError, TypeError) as e:
        raise LmlabError(f"cannot evaluate {expression!r}: {e}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return value


def calculator() -> Tool:
    return Tool("calculator", "Evaluate an arithmetic expression, e.g. (3 + 4) * 2 / 7 or sqrt(16).",
                _object({"expression": {"type": "string", "description": "the arithmetic expression"}},
                        ["expression"]),
                lambda expression: str(calculate(expression)), timeout=5.0)


# ---- python in the sandbox -----------------------------------------------------------------------

def python(timeout: float = 10.0) -> Tool:
    def run(code: str) -> str:
        from lmlab.eval.sandbox import run_program

        r = run_program(code, timeout=timeout)
        if r.status == "passed":
            return r.stdout.strip() or "(no output: print the result)"
        raise LmlabError(f"{r.status}: {r.reason}\n{r.stderr.strip()[-1500:]}".strip())

    return Tool("python", "Run a Python program in a sandbox (no network, no files outside its folder) and "
                          "return what it prints. Print the result.",
                _object({"code": {"type": "string", "description": "a complete Python program"}}, ["code"]),
                run, timeout=timeout + 10)


# ---- search over a RAG index ---------------------------------------------------------------------

def search(index, k: int = 3, mode: str = "hybrid") -> Tool:
    from lmlab.rag.index import Index
    from lmlab.rag.retrieve import retrieve

    if isinstance(index, (str, Path)):
        index = Index.load(index)

    def run(query: str) -> str:
        hits = retrieve(index, query, k, mode if index.embedding_name else "bm25")
        if not hits:
            return "no passage matched"
        return "\n\n".join(f"[{h.doc_id}] {h.chunk.text}" for h in hits)

    return Tool("search", "Search the document index; returns the best passages with their document ids.",
                _object({"query": {"type": "string", "description": "what to look for"}}, ["query"]), run)


# ---- read-only SQL -------------------------------------------------------------------------------

def run_sql(db: str | Path, query: str, timeout: float = 5.0, max_rows: int = 50) -> tuple[list[str], list]:
    """Run one statement on a read-only connection (mode=ro and PRAGMA query_only); a progress
    handler stops it after `timeout` seconds."""
    import sqlite3
    import time

    path = Path(db)
    if not path.is_file():
        raise LmlabError(f"{path}: no such database file")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        con.execute("PRAGMA query_only = ON")
        deadline = time.monotonic() + timeout
        con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        cur = con.execute(query)
        return [d[0] for d in cur.description or []], cur.fetchmany(max_rows)
    except sqlite3.Error as e:
        raise LmlabError(f"sqlite refused the query ({e})") from None
    finally:
        con.close()


def sql(db: str | Path, timeout: float = 5.0) -> Tool:
    import sqlite3

    path = Path(db)
    if not path.is_file():
        raise LmlabError(f"{path}: no such database file (give --db FILE)")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        schema = "\n".join(r[0] for r in con.execute("SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL"))
    finally:
        con.close()

    def run(query: str) -> str:
        columns, rows = run_sql(path, query, timeout)
        return json.dumps({"columns": columns, "rows": rows}, default=str)

    return Tool("sql", f"Run a read-only SQLite query on this database and return the rows as JSON. Schema:\n{schema}",
                _object({"query": {"type": "string", "description": "one SELECT statement"}}, ["query"]),
                run, timeout=timeout + 5)


def make_tools(names: str | list[str], index=None, db=None, k: int = 3) -> list[Tool]:
    """Tools by name (a comma-separated string or a list): calculator, python, search, sql."""
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    tools = []
    for n in names:
        if n == "calculator":
            tools.append(calculator())
        elif n == "python":
            tools.append(python())
        elif n == "search":
            if index is None:
                raise LmlabError("the search tool needs an index (--index DIR)")
            tools.append(search(index, k))
        elif n == "sql":
            if db is None:
                raise LmlabError("the sql tool needs a database (--db FILE)")
            tools.append(sql(db))
        else:
            raise LmlabError(f"unknown tool {n!r}: choose from {', '.join(NAMES)}")
    return tools
