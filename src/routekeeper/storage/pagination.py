"""Keyset (cursor) pagination done in SQL: one indexed range scan per page, never OFFSET and
never loading a whole table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select
from sqlalchemy.ext.asyncio import AsyncConnection

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.pages import MAX_PAGE_SIZE, Page, SortOrder

T = TypeVar("T")


def keyset_query(
    query: Select[Any],
    key: ColumnElement[Any],
    *,
    limit: int,
    order: SortOrder,
    after: str | int | None = None,
    before: str | int | None = None,
) -> Select[Any]:
    """The SQL of one page: a range on the unique ``key``, ordered, ``limit + 1`` rows (the
    extra row tells whether there is more). Index tests explain exactly this query."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}",
            details={"problems": [{"param": "limit", "message": f"1-{MAX_PAGE_SIZE}"}]},
        )
    if after is not None and before is not None:
        raise InvalidRequest(
            "give either after or before, not both",
            details={
                "problems": [
                    {"param": "after", "message": "not together with before"},
                    {"param": "before", "message": "not together with after"},
                ]
            },
        )
    descending = order is SortOrder.DESC
    if after is not None:
        query = query.where(key < after if descending else key > after)
    if before is not None:
        query = query.where(key > before if descending else key < before)
    walk_descending = descending != (before is not None)
    return query.order_by(key.desc() if walk_descending else key.asc()).limit(limit + 1)


async def keyset_page(
    conn: AsyncConnection,
    query: Select[Any],
    key: ColumnElement[Any],
    to_record: Callable[[Any], T],
    record_key: Callable[[T], str | int],
    *,
    limit: int,
    order: SortOrder,
    after: str | int | None = None,
    before: str | int | None = None,
) -> Page[T]:
    """Rows of ``query`` ordered by the unique ``key``. ``after`` continues a listing past a
    cursor in ``order``; ``before`` returns the page that ends just before a cursor."""
    paged = keyset_query(query, key, limit=limit, order=order, after=after, before=before)
    rows = (await conn.execute(paged)).all()
    has_more = len(rows) > limit
    records: Sequence[T] = [to_record(row) for row in rows[:limit]]
    if before is not None:
        records = list(reversed(records))
    first = record_key(records[0]) if records else None
    last = record_key(records[-1]) if records else None
    return Page(data=records, first_id=first, last_id=last, has_more=has_more)
