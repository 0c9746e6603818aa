"""``GET /api/conversations``: the conversations of ``/v1/conversations``, for operators
(OpenAI has no list of conversations; this is routekeeper's own). The responses of one
conversation's turns are ``GET /api/responses?conversation=...``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from routekeeper.contract.conversations import ConversationFilters, ConversationRecord
from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, SortOrder
from routekeeper.dashboard.query import TenantParam, api_router
from routekeeper.dashboard.routes.replay import time_window
from routekeeper.dashboard.services.conversations import ConversationQueries
from routekeeper.http.access import Caller
from routekeeper.http.pages import Limit, ListPage, Order

ConversationCursor = Annotated[
    str | None, Query(pattern=id_pattern("conv"), description="A conversation id.")
]


class ConversationOut(BaseModel):
    """A conversation in a list: its identity, metadata and how many positions it used."""

    id: str
    tenant: str
    created_at: datetime
    metadata: dict[str, Any]
    next_position: int

    @classmethod
    def of(cls, record: ConversationRecord) -> ConversationOut:
        return cls(
            id=record.id,
            tenant=record.tenant_id,
            created_at=record.created_at,
            metadata=record.metadata,
            next_position=record.next_position,
        )


def conversation_filters(
    caller: Caller,
    tenant: TenantParam = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO).")] = None,
    until: Annotated[datetime | None, Query(description="Created before (ISO).")] = None,
) -> ConversationFilters:
    """Times without a zone are UTC; ``since`` after ``until`` is a 400."""
    since, until = time_window(since, until)
    return ConversationFilters(tenant_id=caller.tenant_filter(tenant), since=since, until=until)


def router(queries: ConversationQueries) -> APIRouter:
    routes = api_router(prefix="/api/conversations", tags=["conversations"])

    @routes.get("", operation_id="list_conversations", response_model=ListPage[ConversationOut])
    async def list_conversations(
        filters: Annotated[ConversationFilters, Depends(conversation_filters)],
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: ConversationCursor = None,
        before: ConversationCursor = None,
    ) -> ListPage[ConversationOut]:
        """Conversations, newest first; filters by creation time."""
        page = await queries.list(filters, limit=limit, order=order, after=after, before=before)
        return ListPage.of(page, ConversationOut.of)

    return routes
