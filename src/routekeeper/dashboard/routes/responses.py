"""``GET /api/responses``: stored responses of ``/v1/responses``, for operators (OpenAI has no
list of responses; this is routekeeper's own)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, SortOrder
from routekeeper.contract.responses import ResponseFilters, ResponseRecord, ResponseStatus
from routekeeper.dashboard.query import TenantParam, api_router
from routekeeper.dashboard.routes.replay import time_window
from routekeeper.dashboard.services.responses import ResponseQueries
from routekeeper.http.access import Caller
from routekeeper.http.pages import Limit, ListPage, Order

ResponseCursor = Annotated[
    str | None, Query(pattern=id_pattern("resp"), description="A response id.")
]


class ResponseSummaryOut(BaseModel):
    """A stored response in a list: its state and identity, not its content."""

    id: str
    tenant: str
    replica_id: str
    status: str
    model: str
    selected_model: str | None
    previous_response_id: str | None
    conversation_id: str | None
    replay_id: str | None
    created_at: datetime
    completed_at: datetime | None
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None

    @classmethod
    def of(cls, record: ResponseRecord) -> ResponseSummaryOut:
        return cls(
            id=record.id,
            tenant=record.tenant_id,
            replica_id=record.replica_id,
            status=record.status.value,
            model=record.model,
            selected_model=record.selected_model,
            previous_response_id=record.previous_response_id,
            conversation_id=record.conversation_id,
            replay_id=record.replay_id,
            created_at=record.created_at,
            completed_at=record.completed_at,
            usage=record.usage,
            error=record.error,
            incomplete_details=record.incomplete_details,
        )


def response_filters(
    caller: Caller,
    tenant: TenantParam = None,
    model: Annotated[
        str | None, Query(min_length=1, max_length=256, description="The model asked for.")
    ] = None,
    status: ResponseStatus | None = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO).")] = None,
    until: Annotated[datetime | None, Query(description="Created before (ISO).")] = None,
    conversation: Annotated[
        str | None,
        Query(pattern=id_pattern("conv"), description="The conversation of its turn."),
    ] = None,
) -> ResponseFilters:
    """Times without a zone are UTC; ``since`` after ``until`` is a 400."""
    since, until = time_window(since, until)
    return ResponseFilters(
        tenant_id=caller.tenant_filter(tenant),
        model=model,
        status=status,
        since=since,
        until=until,
        conversation_id=conversation,
    )


def router(queries: ResponseQueries) -> APIRouter:
    routes = api_router(prefix="/api/responses", tags=["responses"])

    @routes.get("", operation_id="list_responses", response_model=ListPage[ResponseSummaryOut])
    async def list_responses(
        filters: Annotated[ResponseFilters, Depends(response_filters)],
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: ResponseCursor = None,
        before: ResponseCursor = None,
    ) -> ListPage[ResponseSummaryOut]:
        """Stored responses, newest first; filters by model, status, creation time and the
        conversation of the turn."""
        page = await queries.list(filters, limit=limit, order=order, after=after, before=before)
        return ListPage.of(page, ResponseSummaryOut.of)

    return routes
