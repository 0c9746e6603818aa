"""The statements of one replay batch on SQLite: a few multi-row statements, never one
statement step per row.

Why: on SQLite the batch runs on the writer thread (``sqlite_writer.py``), and the ``sqlite3``
module releases the GIL around every statement step (each row of an ``executemany``, each row
a ``SELECT`` or ``RETURNING`` fetches), then takes it back. While the event loop keeps the
interpreter busy (full load), taking it back waits for the loop's thread to let go, up to the
interpreter's switch interval (5 ms). Row by row, a batch of 500 records took about a second
under load (a few milliseconds on an idle loop), so the writer wrote less than the requests
recorded, and in ``batch`` mode the queue filled and dropped records. Here a batch is a few
steps whatever its size:

- inserts: ``INSERT .. VALUES (..), (..) .. ON CONFLICT (id) DO UPDATE`` per chunk;
- updates with the same columns: ``UPDATE .. SET col = CASE WHEN id = .. THEN .. END WHERE id
  IN (..)`` per chunk;
- which updated records exist: a count, and the ids only when some are missing (rare).

Chunks hold at most ``MAX_CHUNK_ROWS`` rows and as many as SQLite's limit on variables per
statement allows; their sizes are powers of two, so that few distinct statements exist (each
built once, then cached). PostgreSQL keeps plain ``executemany``: its writes run on the event
loop's thread (``Database.run_write`` runs them inside ``write()``), where the GIL is never
handed over."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Dialect

from routekeeper.storage.schema.replay import router_replay
from routekeeper.storage.sqlite_binds import processors

MAX_CHUNK_ROWS = 128
OLD_VARIABLE_LIMIT = 999
"""SQLite's limit on variables per statement before 3.32, when the driver cannot say."""
TABLE = router_replay.name


def chunk_sizes(count: int, largest: int) -> Iterator[int]:
    """``count`` cut into chunks of ``largest`` (a power of two), then smaller powers of two
    (70 with 64: 64, 4, 2)."""
    while count >= largest:
        yield largest
        count -= largest
    size = largest
    while count:
        size //= 2
        if count >= size:
            yield size
            count -= size


def largest_chunk(conn: Connection, variables_per_row: int) -> int:
    """The largest power of two of rows, at most MAX_CHUNK_ROWS, whose variables fit in one
    statement on this connection."""
    getlimit = getattr(conn.connection.dbapi_connection, "getlimit", None)
    limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else OLD_VARIABLE_LIMIT
    rows = 1
    while rows * 2 <= MAX_CHUNK_ROWS and rows * 2 * variables_per_row <= limit:
        rows *= 2
    return rows


# The statements are written out here rather than built with Core: SQLAlchemy computes a
# statement's cache key on every execution, and for a statement of thousands of bound
# parameters that costs more than the write. Values still go through each column's type
# (``bind_processor``, with ``sqlite_binds.py``'s short ways), as Core would send them.


@functools.cache
def _processors(dialect: Dialect, columns: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """Each column with its bind processor (None when it has none)."""
    return tuple(zip(columns, processors(dialect, router_replay, columns), strict=True))


def _bound(dialect: Dialect, columns: tuple[str, ...], row: dict[str, Any]) -> list[Any]:
    """``row``'s values of ``columns`` as the driver takes them."""
    return [
        row[name] if process is None else process(row[name])
        for name, process in _processors(dialect, columns)
    ]


@functools.cache
def insert_sql(dialect: Dialect, columns: tuple[str, ...], rows: int) -> str:
    """An upsert of ``rows`` records with ``columns`` (their values row after row); a record
    already stored is replaced (a batch written again after its commit outcome was lost)."""
    quote = dialect.identifier_preparer.quote
    keys = [c.name for c in router_replay.primary_key.columns]
    row = "(" + ", ".join("?" * len(columns)) + ")"
    replace = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in keys)
    return (
        f"INSERT INTO {quote(TABLE)} ({', '.join(map(quote, columns))}) "
        f"VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET {replace}"
    )


@functools.cache
def update_sql(dialect: Dialect, columns: tuple[str, ...], rows: int) -> str:
    """An update of ``columns`` of ``rows`` records: for each column, each record's id and
    value; then the ids."""
    quote = dialect.identifier_preparer.quote
    arms = " ".join(["WHEN ? THEN ?"] * rows)
    sets = ", ".join(f"{quote(c)} = CASE {quote('id')} {arms} ELSE {quote(c)} END" for c in columns)
    ids = ", ".join("?" * rows)
    return f"UPDATE {quote(TABLE)} SET {sets} WHERE {quote('id')} IN ({ids})"


def insert_rows(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert ``rows`` (column values, the same columns in each)."""
    if not rows:
        return
    dialect = conn.dialect
    columns = tuple(rows[0])
    start = 0
    for size in chunk_sizes(len(rows), largest_chunk(conn, len(columns))):
        params = [v for row in rows[start : start + size] for v in _bound(dialect, columns, row)]
        conn.exec_driver_sql(insert_sql(dialect, columns, size), tuple(params))
        start += size


def update_rows(conn: Connection, columns: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> None:
    """Apply ``rows`` (``{"_id": record id, column: value, ...}``, each with exactly
    ``columns``); an id that matches no record changes nothing."""
    dialect = conn.dialect
    ((_, process_id),) = _processors(dialect, ("id",))
    start = 0
    # Each id is a variable in the IN list and once in every column's CASE.
    for size in chunk_sizes(len(rows), largest_chunk(conn, 1 + 2 * len(columns))):
        chunk = rows[start : start + size]
        ids = [row["_id"] if process_id is None else process_id(row["_id"]) for row in chunk]
        values = [_bound(dialect, columns, row) for row in chunk]
        params = [
            v for j in range(len(columns)) for i, id_ in enumerate(ids) for v in (id_, values[i][j])
        ]
        conn.exec_driver_sql(update_sql(dialect, columns, size), (*params, *ids))
        start += size


def missing_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` have no record: one row to read when none is missing."""
    if not ids:
        return set()
    where = router_replay.c.id.in_(ids)
    found = conn.execute(select(func.count()).select_from(router_replay).where(where)).scalar()
    if found == len(set(ids)):
        return set()
    return set(ids) - {row[0] for row in conn.execute(select(router_replay.c.id).where(where))}


def write_rows(
    conn: Connection,
    inserts: Sequence[dict[str, Any]],
    updates: dict[tuple[str, ...], list[dict[str, Any]]],
) -> set[str]:
    """A replay batch (``ReplayStore.write_batch``): upsert ``inserts``, apply ``updates``
    (by the columns they change); returns the ids of updates that found no record."""
    insert_rows(conn, inserts)
    missing = missing_ids(conn, [row["_id"] for rows in updates.values() for row in rows])
    for columns, rows in updates.items():
        update_rows(conn, columns, rows)
    return missing
