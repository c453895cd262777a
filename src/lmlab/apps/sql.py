"""Text-to-SQL on a SQLite database: read the schema, build a grammar for a SELECT subset that names
only that database's tables and columns, generate a query under it, run it read-only.

The grammar (llguidance's Lark dialect) covers
    SELECT [DISTINCT] * | item, ... FROM table [JOIN table ON col = col]...
      [WHERE cond (AND|OR cond)...] [GROUP BY col, ... [HAVING agg op value]]
      [ORDER BY item [ASC|DESC], ...] [LIMIT n]
with items a column or COUNT/SUM/AVG/MIN/MAX of one, and conditions comparisons, LIKE, IN,
BETWEEN and IS [NOT] NULL against numbers, quoted strings or columns. Single spaces are written
into the literals (no %ignore), so a query cannot grow runaway whitespace. The query then runs on
a connection opened with mode=ro and `PRAGMA query_only`, and a progress handler stops it after
`timeout` seconds; the grammar already excludes everything but SELECT, the connection makes sure.

`example_db(path)` writes the small shop database the CLI and tests use.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.errors import LmlabError

KEYWORDS = {"select", "from", "where", "group", "order", "by", "limit", "join", "on", "and", "or", "not", "null",
            "is", "in", "like", "between", "as", "asc", "desc", "having", "distinct", "count", "sum", "avg",
            "min", "max", "table", "index", "values", "case", "when", "then", "else", "end", "union"}
SYSTEM = ("You translate questions into SQLite queries. Answer with one SELECT statement and nothing else; "
          "use only the tables and columns of the schema.")


@dataclass
class Schema:
    tables: dict[str, list[tuple[str, str]]]  # table -> [(column, declared type)]
    ddl: dict[str, str] = field(default_factory=dict)  # table -> its CREATE TABLE statement

    def prompt(self) -> str:
        return "\n".join(self.ddl.get(t) or f"CREATE TABLE {t} ({', '.join(c for c, _ in cols)})"
                         for t, cols in self.tables.items())


def connect(path: str | Path) -> sqlite3.Connection:
    """A read-only connection: the file opened with mode=ro and writes refused by query_only."""
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"{path}: no such database file")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("PRAGMA query_only = ON")
    except sqlite3.DatabaseError as e:
        raise LmlabError(f"{path}: not a SQLite database ({e})") from None
    return con


def time_limit(con: sqlite3.Connection, seconds: float) -> None:
    """Stop whatever `con` runs from now on once `seconds` have passed (sqlite: "interrupted")."""
    deadline = time.monotonic() + seconds
    con.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)


def read_schema(path: str | Path) -> Schema:
    """Tables (sqlite's own, sqlite_*, left out) and their columns, read with PRAGMA table_info."""
    con = connect(path)
    try:
        time_limit(con, 5.0)
        rows = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                           "ORDER BY name").fetchall()
        tables, ddl = {}, {}
        for name, sql in rows:
            cols = con.execute(f"PRAGMA table_info({quote(name)})").fetchall()
            tables[name] = [(c[1], c[2] or "") for c in cols]
            ddl[name] = sql or ""
    finally:
        con.close()
    if not tables:
        raise LmlabError(f"{path}: the database has no tables")
    return Schema(tables, ddl)


def quote(name: str) -> str:
    """An identifier as SQL must write it: bare when it can be, else double-quoted."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.lower() not in KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _alts(names) -> str:
    """A Lark alternation of string literals, longest first."""
    return " | ".join(json.dumps(n) for n in sorted(set(names), key=lambda s: (-len(s), s)))


def grammar(schema: Schema) -> str:
    """The Lark grammar (llguidance dialect) of the SELECT subset over `schema`'s names only."""
    tables = [quote(t) for t in schema.tables]
    columns = {quote(c) for cols in schema.tables.values() for c, _ in cols}
    columns |= {f"{quote(t)}.{quote(c)}" for t, cols in schema.tables.items() for c, _ in cols}
    return "\n".join([
        'start: select ";"?',
        'select: "SELECT " DISTINCT? items " FROM " TABLE join* where? group? order? limit?',
        'DISTINCT: "DISTINCT "',
        'items: "*" | item (", " item)*',
        "item: COLUMN | agg",
        'agg: AGG "(" COLUMN ")" | "COUNT(*)" | "COUNT(DISTINCT " COLUMN ")"',
        'AGG: "COUNT" | "SUM" | "AVG" | "MIN" | "MAX"',
        'join: " JOIN " TABLE " ON " COLUMN " = " COLUMN',
        'where: " WHERE " cond ((" AND " | " OR ") cond)*',
        'cond: COLUMN OP value | COLUMN " IS NULL" | COLUMN " IS NOT NULL" | COLUMN " LIKE " STRING'
        ' | COLUMN " BETWEEN " value " AND " value | COLUMN " IN (" value (", " value)* ")"',
        'OP: " = " | " != " | " < " | " <= " | " > " | " >= "',
        "value: NUMBER | STRING | COLUMN",
        r"NUMBER: /-?[0-9]{1,12}(\.[0-9]{1,6})?/",
        r"STRING: /'[^'\n]{0,80}'/",
        'group: " GROUP BY " COLUMN (", " COLUMN)* having?',
        'having: " HAVING " agg OP value',
        'order: " ORDER BY " order_item (", " order_item)*',
        'order_item: (COLUMN | agg) (" ASC" | " DESC")?',
        r'limit: " LIMIT " /[1-9][0-9]{0,3}/',
        f"TABLE: {_alts(tables)}",
        f"COLUMN: {_alts(columns)}",
    ])


@dataclass
class Answer:
    question: str
    sql: str
    columns: list[str]
    rows: list[tuple]
    finish_reason: str

    def to_dict(self) -> dict:
        return {"question": self.question, "sql": self.sql, "columns": self.columns,
                "rows": [list(r) for r in self.rows], "finish_reason": self.finish_reason}


def run(path: str | Path, sql: str, timeout: float = 5.0, max_rows: int = 1000) -> tuple[list[str], list[tuple]]:
    """Run one query read-only -> (column names, at most `max_rows` rows)."""
    con = connect(path)
    try:
        time_limit(con, timeout)
        cur = con.execute(sql)
        rows = cur.fetchmany(max_rows)
        return [d[0] for d in cur.description or []], rows
    except sqlite3.OperationalError as e:
        if "interrupted" in str(e):
            raise LmlabError(f"query ran past {timeout} s and was stopped: {sql}") from None
        raise LmlabError(f"sqlite refused the query ({e}): {sql}") from None
    except sqlite3.DatabaseError as e:
        raise LmlabError(f"sqlite refused the query ({e}): {sql}") from None
    finally:
        con.close()


def prompt(schema: Schema, question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Schema:\n{schema.prompt()}\n\nQuestion: {question}\nSQL:"}]


def ask(lm, question: str, db: str | Path, *, max_tokens: int = 128, timeout: float = 5.0,
        max_rows: int = 1000, **params) -> Answer:
    """Generate a query for `question` under the database's grammar (greedy unless `params` say
    otherwise) and run it."""
    if not question.strip():
        raise LmlabError("empty question: ask something about the database")
    schema = read_schema(db)
    params.setdefault("temperature", 0.0)
    out = lm.generate(prompt(schema, question), max_new_tokens=max_tokens, guided_grammar=grammar(schema), **params)
    sql = out.text.strip()
    if out.finish_reason == "length":
        raise LmlabError(f"the query did not finish within {max_tokens} tokens: {sql}")
    columns, rows = run(db, sql, timeout, max_rows)
    return Answer(question, sql, columns, rows, out.finish_reason)


# ---- the example database ------------------------------------------------------------------------

SHOP = {
    "customers": ("id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, country TEXT, joined DATE", [
        (1, "Alice Martin", "Paris", "France", "2023-01-15"), (2, "Bob Smith", "London", "UK", "2023-02-03"),
        (3, "Chen Wei", "Shanghai", "China", "2023-03-22"), (4, "Diana Rossi", "Rome", "Italy", "2023-05-09"),
        (5, "Emil Novak", "Prague", "Czechia", "2023-06-30"), (6, "Fatima Zahra", "Casablanca", "Morocco",
                                                               "2023-08-12"),
        (7, "George Brown", "London", "UK", "2024-01-05"), (8, "Hana Sato", "Tokyo", "Japan", "2024-02-17"),
    ]),
    "products": ("id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT, price REAL", [
        (1, "Laptop", "electronics", 999.0), (2, "Headphones", "electronics", 59.9),
        (3, "Coffee maker", "kitchen", 45.5), (4, "Desk chair", "furniture", 149.0),
        (5, "Notebook", "stationery", 3.2), (6, "Pen set", "stationery", 7.8),
        (7, "Blender", "kitchen", 39.99), (8, "Monitor", "electronics", 219.0),
    ]),
    "orders": ("id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), order_date DATE, "
               "status TEXT", [
                   (1, 1, "2024-03-01", "shipped"), (2, 2, "2024-03-02", "shipped"),
                   (3, 1, "2024-03-10", "delivered"), (4, 3, "2024-03-11", "cancelled"),
                   (5, 4, "2024-04-01", "shipped"), (6, 7, "2024-04-03", "pending"),
                   (7, 8, "2024-04-20", "delivered"), (8, 2, "2024-05-05", "delivered"),
                   (9, 5, "2024-05-06", "pending"), (10, 6, "2024-05-07", "shipped"),
               ]),
    "order_items": ("order_id INTEGER REFERENCES orders(id), product_id INTEGER REFERENCES products(id), "
                    "quantity INTEGER", [
                        (1, 1, 1), (1, 2, 2), (2, 5, 10), (3, 3, 1), (4, 8, 2), (5, 4, 1), (5, 6, 3),
                        (6, 2, 1), (7, 7, 1), (7, 5, 4), (8, 1, 1), (9, 6, 2), (10, 3, 1), (10, 8, 1),
                    ]),
}


def example_db(path: str | Path) -> Path:
    """Write the example shop database (customers, products, orders, order_items) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        for table, (columns, rows) in SHOP.items():
            con.execute(f"CREATE TABLE {table} ({columns})")
            con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        con.commit()
    finally:
        con.close()
    tmp.replace(path)  # never leave a half-written database where a later run would find it
    return path


def default_db() -> Path:
    """The example database in the lmlab cache, built on first use."""
    from lmlab.model.io.resolve import lmlab_home

    path = lmlab_home() / "sql" / "shop.sqlite"
    return path if path.is_file() else example_db(path)
