"""Text-to-SQL: the grammar admits the SELECT subset over the database's own names and nothing
else (checked with llguidance's matcher), queries run read-only with a time limit (sqlite3 is
the reference for the rows), and a generated query runs."""

from __future__ import annotations

import json
import sqlite3

import pytest

from lmlab.apps import sql
from lmlab.errors import LmlabError

VALID = [
    "SELECT * FROM customers",
    "SELECT name, city FROM customers WHERE country = 'UK' ORDER BY name LIMIT 5;",
    "SELECT DISTINCT country FROM customers",
    "SELECT customers.name, COUNT(*) FROM customers JOIN orders ON orders.customer_id = customers.id "
    "GROUP BY customers.name ORDER BY COUNT(*) DESC",
    "SELECT category, AVG(price) FROM products GROUP BY category HAVING AVG(price) > 10",
    "SELECT name FROM products WHERE price BETWEEN 10 AND 100 AND category IN ('kitchen', 'furniture')",
    "SELECT products.name, SUM(order_items.quantity) FROM order_items JOIN products ON "
    "order_items.product_id = products.id GROUP BY products.name ORDER BY SUM(order_items.quantity) DESC LIMIT 3",
    "SELECT COUNT(DISTINCT city) FROM customers WHERE city IS NOT NULL OR name LIKE 'A%'",
    "SELECT MAX(price), MIN(price) FROM products WHERE price != -1.5",
]
INVALID = [
    "SELECT * FROM users",  # no such table
    "SELECT email FROM customers",  # no such column
    "SELECT * FROM sqlite_master",
    "DELETE FROM customers",
    "UPDATE products SET price = 0",
    "DROP TABLE orders",
    "SELECT * FROM customers; DROP TABLE customers",
    "SELECT * FROM customers WHERE name = 'x' UNION SELECT * FROM orders",
    "SELECT  * FROM customers",  # whitespace is fixed: no runaway spaces
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return sql.example_db(tmp_path_factory.mktemp("sql") / "shop.sqlite")


@pytest.fixture(scope="module")
def shop_grammar(shop):
    return sql.grammar(sql.read_schema(shop))


def test_schema_is_read_from_sqlite(shop):
    schema = sql.read_schema(shop)
    assert sorted(schema.tables) == ["customers", "order_items", "orders", "products"]
    assert [c for c, _ in schema.tables["products"]] == ["id", "name", "category", "price"]
    assert "REFERENCES customers(id)" in schema.prompt()


@pytest.mark.parametrize("query", VALID)
def test_grammar_admits_valid_queries_and_they_run_as_sqlite_runs_them(admits, shop, shop_grammar, query):
    assert admits(shop_grammar, query)
    columns, rows = sql.run(shop, query)
    with sqlite3.connect(shop) as con:
        cur = con.execute(query)
        assert rows == cur.fetchall() and columns == [d[0] for d in cur.description]


@pytest.mark.parametrize("query", INVALID)
def test_grammar_rejects_other_names_and_statements(admits, shop_grammar, query):
    assert not admits(shop_grammar, query)


def test_identifiers_that_need_quotes(admits, tmp_path):
    db = tmp_path / "odd.sqlite"
    with sqlite3.connect(db) as con:
        con.execute('CREATE TABLE "order" ("first name" TEXT, total REAL)')
        con.execute("""INSERT INTO "order" VALUES ('Ann', 3.5)""")
    g = sql.grammar(sql.read_schema(db))
    query = 'SELECT "first name" FROM "order" WHERE total > 1'
    assert admits(g, query) and not admits(g, "SELECT first name FROM order")
    assert sql.run(db, query) == (["first name"], [("Ann",)])


def test_runs_are_read_only_and_time_limited(shop):
    with pytest.raises(LmlabError, match="readonly|read-only"):
        sql.run(shop, "DELETE FROM customers")
    assert len(sql.run(shop, "SELECT * FROM customers")[1]) == len(sql.SHOP["customers"][1])
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n"
    with pytest.raises(LmlabError, match="ran past 0.2 s"):
        sql.run(shop, endless, timeout=0.2)
    with pytest.raises(LmlabError, match="no such database"):
        sql.read_schema(shop.parent / "missing.sqlite")


def test_cli_generates_a_query_that_runs(bundled_folder, shop, capsys):
    from lmlab.cli.main import main

    assert main(["sql", "How many customers live in London?", "--db", str(shop), "--model", str(bundled_folder),
                 "--max-new-tokens", "64", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    with sqlite3.connect(shop) as con:  # the query is a valid SELECT over the shop and its rows are sqlite's
        assert answer["rows"] == [list(r) for r in con.execute(answer["sql"]).fetchall()]
    assert answer["sql"].startswith("SELECT ") and answer["finish_reason"] == "stop"
    assert main(["sql", "--example-db", str(shop.parent / "again.sqlite")]) == 0
    assert sql.read_schema(shop.parent / "again.sqlite").tables == sql.read_schema(shop).tables
