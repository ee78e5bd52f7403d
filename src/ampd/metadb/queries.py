"""Named SQL queries, loaded from `queries.sql`.

Each statement in the file sits under a `-- name --` line; code runs queries by name and
never builds SQL itself. Parameters use psycopg's `%(name)s` style.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --\s*$", re.MULTILINE)


@cache
def load_queries() -> dict[str, str]:
    """All queries by name; raises ValueError on a duplicate or an empty query."""
    text = (resources.files("ampd.metadb") / "queries.sql").read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(
            line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
        ).strip()
        if not sql:
            raise ValueError(f"query {name!r} in queries.sql is empty")
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in queries.sql")
        queries[name] = sql
    return queries


def query(name: str) -> str:
    """The SQL of the query called `name`."""
    try:
        return load_queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in queries.sql") from None
