"""The writes the responses store queues for its group commit: a queued write and its waiter,
the insert of a response with its items, a flush's batch of them (the inserts in two
statements; on SQLite, ``sqlite_inserts.py``) and how a write's outcome settles its
waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from routekeeper.contract.errors import InvalidTransition, NotFound
from routekeeper.contract.responses import ResponseItemRecord, ResponseRecord
from routekeeper.storage.conversations_store import append_turn
from routekeeper.storage.dialect import SQLITE, Dialect
from routekeeper.storage.records import to_row
from routekeeper.storage.schema.responses import response_items, responses
from routekeeper.storage.sqlite_inserts import insert_rows

# A write: statements on the writer's connection, run with the others of its group in one call
# (``Database.run_write``), so it is synchronous and does no I/O of its own.
Write = Callable[[Connection], Any]
# What one write may raise without touching the transaction (it raises before writing).
ALONE = (NotFound, InvalidTransition)


@dataclass
class Queued:
    write: Write
    done: asyncio.Future[Any]
    start: str | None = None
    """The response id when this is a start (finishes may still merge into it)."""
    due: float = 0.0
    """When a deferred start is queued (the loop's clock)."""


@dataclass
class Inserting:
    """A write inserting a response and its items (a start, or a start and its finish);
    ``append_to`` (a finish) appends the turn to that conversation in the same transaction."""

    record: ResponseRecord
    items: Sequence[ResponseItemRecord]
    append_to: tuple[Dialect, str] | None = None

    def __call__(self, conn: Connection) -> None:
        run_batch(conn, [self])


# Built once: executing the same statement objects skips building them and their cache keys.
INSERT_RESPONSES = insert(responses)
INSERT_ITEMS = insert(response_items)


def run_batch(conn: Connection, writes: Sequence[Write]) -> list[Any]:
    """The writes of one flush, each one's result in order. The inserts of responses go first
    and together: one statement for the responses, one for all their items (a finish queued
    after its response's start still runs after it); then the turns of those that finish on a
    conversation are appended to it. What a write raises of :data:`ALONE` is its result (it
    wrote nothing); anything else spoils the batch (each is then run alone)."""
    inserts = [w for w in writes if isinstance(w, Inserting)]
    if inserts:
        rows = [to_row(w.record) for w in inserts]
        items = [to_row(i) for w in inserts for i in w.items]
        if conn.dialect.name == SQLITE.name:  # a few statement steps, not one per row
            insert_rows(conn, responses, rows)
            insert_rows(conn, response_items, items)
        else:
            conn.execute(INSERT_RESPONSES, rows)
            if items:
                conn.execute(INSERT_ITEMS, items)
        for w in inserts:
            if w.append_to is not None:
                append_turn(
                    conn, *w.append_to, response_id=w.record.id, tenant_id=w.record.tenant_id
                )
    results: list[Any] = []
    for write in writes:
        if isinstance(write, Inserting):
            results.append(None)
            continue
        try:
            results.append(write(conn))
        except ALONE as exc:
            results.append(exc)
    return results


def inserting(
    record: ResponseRecord,
    items: Sequence[ResponseItemRecord],
    append_to: tuple[Dialect, str] | None = None,
) -> Inserting:
    return Inserting(record, list(items), append_to)


def settle(done: asyncio.Future[Any], result: Any) -> None:
    if done.done():
        return
    if isinstance(result, Exception) and not isinstance(result, ALONE):
        done.set_exception(result)
    else:
        done.set_result(result)
