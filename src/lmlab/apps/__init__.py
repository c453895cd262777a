"""Applications built on the engine: tool calling (tools.py) and text-to-SQL (sql.py)."""
