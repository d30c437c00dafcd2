"""The hot path's SQL is written once, in PostgreSQL's spelling (asyncpg: $n parameters, text
arrays), and run on SQLite through sqlite(). Every difference between the two that the hot
statements meet is named here, and nowhere else:

- parameters: `$n` (asyncpg) is `?n` (sqlite3's numbered parameters, same numbers);
- a list parameter: `= ANY($n)` / `= ANY($n::text[])` is `IN (SELECT value FROM json_each(?n))`,
  and the list is passed as JSON text (as_list());
- `IS NOT DISTINCT FROM` is spelled the same (SQLite >= 3.39), and so are `RETURNING` (3.35),
  `UPDATE ... FROM` (3.33) and `->>` (3.38); times are compared as SQLite stores them
  (app/lite.py db_time).

What SQLite cannot run at all, data-modifying CTEs (PostgreSQL's one-statement submit and
complete, app/chat/pg.py), is written as the few statements of one transaction in
app/chat/lite.py, each beside the pg.py statement it stands for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

_ANY = re.compile(r"=\s*ANY\(\$(\d+)(?:::\w+\[\])?\)")
_PARAM = re.compile(r"\$(\d+)")

SQLITE_MIN_VERSION = (3, 39, 0)  # IS NOT DISTINCT FROM; the rest is older


@lru_cache(maxsize=256)
def sqlite(text: str) -> str:
    """A PostgreSQL hot-path statement as SQLite runs it."""
    return _PARAM.sub(r"?\1", _ANY.sub(r"IN (SELECT value FROM json_each($\1))", text))


def as_list(values: Iterable[Any]) -> str:
    """A list parameter for SQLite (json_each)."""
    return orjson.dumps(list(values)).decode()
