"""Plain multi-row inserts on SQLite: ``INSERT .. VALUES (..), (..)`` per chunk, the values
already passed through each column's type.

Why: Core's ``executemany`` of a compiled insert runs SQLAlchemy's per-row parameter
processing in Python and then one statement step per row; on SQLite each step releases the
GIL and takes it back from a busy event loop (see ``replay_writes.py``). Here a chunk of rows
is one step, and the values go through each column's ``bind_processor`` as Core would apply
it (client text checked and bounded, JSON encoded, datetimes in UTC; with a short way for the
common value, ``sqlite_binds.py``), so what is stored and what is refused do not change. A
value a column type refuses raises ``InvalidValue`` (the error translation of a
``StatementError`` from Core). PostgreSQL keeps Core's ``executemany``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect

from routekeeper.contract.errors import InvalidValue
from routekeeper.storage.replay_writes import chunk_sizes, largest_chunk
from routekeeper.storage.sqlite_binds import processors as _processors


@functools.cache
def insert_sql(dialect: Dialect, table: Table, columns: tuple[str, ...], rows: int) -> str:
    """An insert of ``rows`` rows of ``columns`` (their values row after row)."""
    quote = dialect.identifier_preparer.quote
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return (
        f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) "
        f"VALUES {', '.join([row] * rows)}"
    )


def _bound(processors: tuple[Any, ...], columns: tuple[str, ...], row: dict[str, Any]) -> list[Any]:
    try:
        return [
            row[name] if process is None else process(row[name])
            for name, process in zip(columns, processors, strict=True)
        ]
    except InvalidValue:
        raise
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidValue(f"the database cannot hold a value: {exc}") from exc


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (column values, the same columns in each) into ``table``; a row that
    conflicts fails the statement (the caller's transaction or savepoint is rolled back)."""
    if not rows:
        return
    dialect = conn.dialect
    columns = tuple(rows[0])
    processors = _processors(dialect, table, columns)
    start = 0
    for size in chunk_sizes(len(rows), largest_chunk(conn, len(columns))):
        params = [
            value
            for row in rows[start : start + size]
            for value in _bound(processors, columns, row)
        ]
        conn.exec_driver_sql(insert_sql(dialect, table, columns, size), tuple(params))
        start += size
