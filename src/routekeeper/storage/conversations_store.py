"""The ``conversations`` and ``conversation_items`` surfaces: conversations and their items.

Every append (items a client sends, a finished turn of the Responses API) locks the
conversation's row (``FOR UPDATE`` on PostgreSQL; SQLite has one writer), takes positions from
its ``next_position`` counter and advances it, in one transaction: appends never interleave,
and a turn's input and output sit together. A turn is appended by :func:`append_turn`, which
the responses store calls in the transaction that finishes the response. Deleting a
conversation deletes its items (ON DELETE CASCADE). Nothing is kept in flight, so there is no
recovery step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from routekeeper.contract.conversations import (
    ConversationFilters,
    ConversationItemRecord,
    ConversationRecord,
)
from routekeeper.contract.errors import InvalidRequest, NotFound
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.dialect import Dialect
from routekeeper.storage.pagination import keyset_query
from routekeeper.storage.records import from_row, to_row
from routekeeper.storage.schema.conversations import conversation_items, conversations
from routekeeper.storage.schema.responses import response_items
from routekeeper.storage.surface_store import SurfaceStore
from routekeeper.storage.types import ClientString, UTCDateTime, utcnow


def _conversation(row: Any) -> ConversationRecord:
    return from_row(ConversationRecord, row)


def _item(row: Any) -> ConversationItemRecord:
    return from_row(ConversationItemRecord, row)


def conversation_not_found(conversation_id: str) -> NotFound:
    error = NotFound(f"Conversation with id '{conversation_id}' not found.")
    error.param = "conversation"
    return error


def _locked(
    conn: Connection, dialect: Dialect, conversation_id: str, tenant_id: str
) -> ConversationRecord | None:
    """The conversation's row, locked until the transaction ends (None when it is gone)."""
    query = dialect.for_update(
        select(conversations)
        .where(conversations.c.id == conversation_id)
        .where(conversations.c.tenant_id == tenant_id)
    )
    row = conn.execute(query).one_or_none()
    return None if row is None else _conversation(row)


async def _found(conn: AsyncConnection, conversation_id: str, tenant_id: str) -> Any:
    """The conversation's row as this transaction sees it; NotFound when there is none."""
    row = (
        await conn.execute(
            select(conversations)
            .where(conversations.c.id == conversation_id)
            .where(conversations.c.tenant_id == tenant_id)
        )
    ).one_or_none()
    if row is None:
        raise conversation_not_found(conversation_id)
    return row


def _advance(conn: Connection, conversation_id: str, next_position: int) -> None:
    conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(next_position=next_position)
    )


def append_turn(
    conn: Connection,
    dialect: Dialect,
    conversation_id: str,
    *,
    response_id: str,
    tenant_id: str,
    at: datetime | None = None,
) -> bool:
    """Inside a write transaction (the one finishing ``response_id``): append every item of
    the response (its input, then its output, as stored in ``response_items``) to the
    conversation, at positions taken from its counter under the row's lock. Returns False,
    appending nothing, when the conversation was deleted meanwhile."""
    found = _locked(conn, dialect, conversation_id, tenant_id)
    if found is None:
        return False
    r = response_items.c
    count = conn.execute(
        select(func.count()).select_from(response_items).where(r.response_id == response_id)
    ).scalar_one()
    if not count:
        return True
    base = found.next_position
    conn.execute(
        insert(conversation_items).from_select(
            ["id", "conversation_id", "tenant_id", "position", "response_id", "created_at", "data"],
            select(
                r.id,
                bindparam("conversation", conversation_id, type_=ClientString(40)),
                r.tenant_id,
                r.position + base,
                r.response_id,
                bindparam("at", at or utcnow(), type_=UTCDateTime()),
                r.data,
            ).where(r.response_id == response_id),
        )
    )
    _advance(conn, conversation_id, base + int(count))
    return True


class ConversationsStore(SurfaceStore):
    tables = {
        "conversations": (conversations,),
        "conversation_items": (conversation_items,),
    }
    records = {
        conversations.name: ConversationRecord,
        conversation_items.name: ConversationItemRecord,
    }

    # -- writes ----------------------------------------------------------------------------

    async def create(
        self, record: ConversationRecord, items: Sequence[dict[str, Any]]
    ) -> tuple[ConversationRecord, list[ConversationItemRecord]]:
        """Insert a conversation and its first items (``data`` with their ids), in one
        transaction; returns them once committed."""
        record = replace(record, next_position=len(items))
        rows = [
            ConversationItemRecord(
                id=item["id"],
                conversation_id=record.id,
                position=position,
                created_at=record.created_at,
                data=item,
                tenant_id=record.tenant_id,
            )
            for position, item in enumerate(items)
        ]

        def write(conn: Connection) -> None:
            conn.execute(insert(conversations), to_row(record))
            if rows:
                conn.execute(insert(conversation_items), [to_row(i) for i in rows])

        await self.db.run_write(write)
        return record, rows

    async def add_items(
        self, conversation_id: str, items: Sequence[dict[str, Any]], *, tenant_id: str
    ) -> list[ConversationItemRecord]:
        """Append items (``data`` with their ids) at the end of the conversation, together,
        in one transaction; NotFound when there is no such conversation."""
        now = utcnow()

        def write(conn: Connection) -> list[ConversationItemRecord]:
            found = _locked(conn, self.db.dialect, conversation_id, tenant_id)
            if found is None:
                raise conversation_not_found(conversation_id)
            rows = [
                ConversationItemRecord(
                    id=item["id"],
                    conversation_id=conversation_id,
                    position=found.next_position + i,
                    created_at=now,
                    data=item,
                    tenant_id=tenant_id,
                )
                for i, item in enumerate(items)
            ]
            if rows:
                conn.execute(insert(conversation_items), [to_row(i) for i in rows])
                _advance(conn, conversation_id, found.next_position + len(rows))
            return rows

        return await self.db.run_write(write)

    async def update_metadata(
        self, conversation_id: str, metadata: dict[str, Any], *, tenant_id: str
    ) -> ConversationRecord:
        """Replace the conversation's metadata; NotFound when there is none."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .where(conversations.c.tenant_id == tenant_id)
                .values(metadata=metadata)
            )
            if result.rowcount == 0:
                raise conversation_not_found(conversation_id)
            row = (
                await conn.execute(
                    select(conversations).where(conversations.c.id == conversation_id)
                )
            ).one()
        return _conversation(row)

    async def delete(self, conversation_id: str, *, tenant_id: str) -> None:
        """Delete a conversation and (by cascade) its items; NotFound when there is none."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(conversations)
                .where(conversations.c.id == conversation_id)
                .where(conversations.c.tenant_id == tenant_id)
            )
        if result.rowcount == 0:
            raise conversation_not_found(conversation_id)

    async def delete_item(
        self, conversation_id: str, item_id: str, *, tenant_id: str
    ) -> ConversationRecord:
        """Delete one item; returns its conversation. NotFound for either."""
        async with self.db.write() as conn:
            row = await _found(conn, conversation_id, tenant_id)
            result = await conn.execute(
                delete(conversation_items)
                .where(conversation_items.c.id == item_id)
                .where(conversation_items.c.conversation_id == conversation_id)
            )
            if result.rowcount == 0:
                raise _item_not_found(item_id, conversation_id)
        return _conversation(row)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, conversation_id: str, *, tenant_id: str) -> ConversationRecord:
        """The conversation; NotFound (``param: conversation``) when there is none."""
        try:
            return await self._one(
                conversations,
                conversation_id,
                _conversation,
                "conversation",
                where=conversations.c.tenant_id == tenant_id,
            )
        except NotFound:
            raise conversation_not_found(conversation_id) from None

    async def history(
        self, conversation_id: str, *, tenant_id: str
    ) -> list[ConversationItemRecord]:
        """Every item of the conversation in order, as committed now (one snapshot);
        NotFound when there is no such conversation."""
        async with self.db.read() as conn:
            await _found(conn, conversation_id, tenant_id)
            rows = await conn.execute(
                select(conversation_items)
                .where(conversation_items.c.conversation_id == conversation_id)
                .order_by(conversation_items.c.position)
            )
            return [_item(r) for r in rows]

    async def item(
        self, conversation_id: str, item_id: str, *, tenant_id: str
    ) -> ConversationItemRecord:
        """One item of the conversation; NotFound for either."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(conversation_items)
                    .where(conversation_items.c.id == item_id)
                    .where(conversation_items.c.conversation_id == conversation_id)
                    .where(conversation_items.c.tenant_id == tenant_id)
                )
            ).one_or_none()
        if row is None:
            await self.get(conversation_id, tenant_id=tenant_id)
            raise _item_not_found(item_id, conversation_id)
        return _item(row)

    async def items(
        self,
        conversation_id: str,
        *,
        tenant_id: str,
        limit: int,
        order: SortOrder,
        after: str | None,
    ) -> Page[ConversationItemRecord]:
        """One keyset page of the conversation's items by position. ``after`` is an item id
        of the conversation (a 400 naming ``after`` when it is not one of its items)."""
        c = conversation_items.c
        async with self.db.read() as conn:
            await _found(conn, conversation_id, tenant_id)
            position = None
            if after is not None:
                position = (
                    await conn.execute(
                        select(c.position)
                        .where(c.id == after)
                        .where(c.conversation_id == conversation_id)
                    )
                ).scalar_one_or_none()
                if position is None:
                    raise InvalidRequest(
                        f"after: no item '{after}' in conversation '{conversation_id}'",
                        param="after",
                    )
            query = keyset_query(
                select(conversation_items).where(c.conversation_id == conversation_id),
                c.position,
                limit=limit,
                order=order,
                after=position,
            )
            rows = (await conn.execute(query)).all()
        records = [_item(r) for r in rows[:limit]]
        return Page(
            data=records,
            first_id=records[0].id if records else None,
            last_id=records[-1].id if records else None,
            has_more=len(rows) > limit,
        )

    async def list_conversations(
        self,
        filters: ConversationFilters,
        *,
        limit: int,
        order: SortOrder,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[ConversationRecord]:
        """Conversations by id (newest first by default), keyset pages."""
        c = conversations.c
        query = select(conversations)
        if filters.tenant_id is not None:
            query = query.where(c.tenant_id == filters.tenant_id)
        if filters.since is not None:
            query = query.where(c.created_at >= filters.since)
        if filters.until is not None:
            query = query.where(c.created_at < filters.until)
        return await self._page(
            query, c.id, _conversation, limit=limit, order=order, after=after, before=before
        )


def _item_not_found(item_id: str, conversation_id: str) -> NotFound:
    error = NotFound(f"Item with id '{item_id}' not found in conversation '{conversation_id}'.")
    error.param = "item_id"
    return error
