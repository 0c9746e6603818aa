"""The writes the responses store queues for its group commit: a queued write and its waiter,
the insert of a response with its items, and how a write's outcome settles its waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from routekeeper.contract.errors import InvalidTransition, NotFound
from routekeeper.contract.responses import ResponseItemRecord, ResponseRecord
from routekeeper.storage.records import to_row
from routekeeper.storage.schema.responses import response_items, responses

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
    """A write inserting a response and its items (a start, or a start and its finish)."""

    record: ResponseRecord
    items: Sequence[ResponseItemRecord]

    def __call__(self, conn: Connection) -> None:
        conn.execute(insert(responses), to_row(self.record))
        if self.items:
            conn.execute(insert(response_items), [to_row(i) for i in self.items])


def inserting(record: ResponseRecord, items: Sequence[ResponseItemRecord]) -> Inserting:
    return Inserting(record, list(items))


def settle(done: asyncio.Future[Any], result: Any) -> None:
    if done.done():
        return
    if isinstance(result, Exception) and not isinstance(result, ALONE):
        done.set_exception(result)
    else:
        done.set_result(result)
