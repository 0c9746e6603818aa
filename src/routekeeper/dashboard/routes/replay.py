"""``GET /api/replay`` and ``GET /api/replay/{id}``: the router's audit records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, SortOrder
from routekeeper.contract.replay import LifecycleState, ReplayFilters
from routekeeper.dashboard.query import TenantParam, api_router
from routekeeper.dashboard.schemas import ReplayOut, ReplaySummaryOut
from routekeeper.dashboard.services.replay import ReplayQueries
from routekeeper.http.access import Caller
from routekeeper.http.pages import Limit, ListPage, Order

REPLAY_ID = id_pattern("rpl")
ReplayCursor = Annotated[str | None, Query(pattern=REPLAY_ID, description="A replay id.")]
Name = Annotated[str | None, Query(min_length=1, max_length=256)]


def replay_filters(
    caller: Caller,
    tenant: TenantParam = None,
    decision: Name = None,
    model: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Selected model.")
    ] = None,
    lifecycle_state: LifecycleState | None = None,
    session_id: Name = None,
    since: Annotated[datetime | None, Query(description="Started at or after (ISO).")] = None,
    until: Annotated[datetime | None, Query(description="Started before (ISO).")] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=500, description="Words all found in the captured prompt."),
    ] = None,
) -> ReplayFilters:
    """The filters shared by the list and the aggregate; times without a zone are UTC.
    ``since`` after ``until`` is a 400 (it could only ever match nothing)."""
    since, until = time_window(since, until)
    return ReplayFilters(
        tenant_id=caller.tenant_filter(tenant),
        decision=decision,
        model=model,
        lifecycle_state=lifecycle_state,
        session_id=session_id,
        since=since,
        until=until,
        q=q,
    )


Filters = Annotated[ReplayFilters, Depends(replay_filters)]


def time_window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` in UTC (:func:`as_utc`); ``since`` after ``until`` is a 400
    (it could only ever match nothing)."""
    since, until = as_utc(since, "since"), as_utc(until, "until")
    if since is not None and until is not None and since > until:
        raise InvalidRequest(
            f"since ({since.isoformat()}) is after until ({until.isoformat()})",
            details={
                "problems": [
                    {"param": "since", "message": "must not be after until"},
                    {"param": "until", "message": "must not be before since"},
                ]
            },
        )
    return since, until


def as_utc(value: datetime | None, param: str) -> datetime | None:
    """The time in UTC (times without a zone are taken as UTC); a 400 naming ``param`` when
    it has no UTC equivalent (year 1 east of Greenwich, year 9999 west of it)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        message = f"{value.isoformat()} is outside the years 1 to 9999 in UTC"
        raise InvalidRequest(
            f"{param}: {message}",
            param=param,
            details={"problems": [{"param": param, "message": message}]},
        ) from None


def router(queries: ReplayQueries) -> APIRouter:
    """The replay records ``queries`` reads."""
    routes = api_router(prefix="/api/replay", tags=["replay"])

    @routes.get("", operation_id="list_replay", response_model=ListPage[ReplaySummaryOut])
    async def list_replay(
        filters: Filters,
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: ReplayCursor = None,
        before: ReplayCursor = None,
    ) -> ListPage[ReplaySummaryOut]:
        """Replay summaries (no captured bodies), newest first; every filter uses an index."""
        page = await queries.list(filters, limit=limit, order=order, after=after, before=before)
        return ListPage.of(page, ReplaySummaryOut.of)

    @routes.get("/aggregate", operation_id="aggregate_replay")
    async def aggregate_replay(filters: Filters) -> dict[str, Any]:
        """Counts by decision, model and lifecycle state; token and cost sums; total latency
        p50/p95/p99 in milliseconds. Same filters as the list."""
        return await queries.aggregate(filters)

    @routes.get(
        "/sessions/{session_id}",
        operation_id="get_replay_session",
        response_model=ListPage[ReplaySummaryOut],
    )
    async def get_replay_session(
        session_id: Annotated[str, Path(min_length=1, max_length=256)],
        caller: Caller,
        tenant: TenantParam = None,
        limit: Limit = 100,
        after: ReplayCursor = None,
    ) -> ListPage[ReplaySummaryOut]:
        """A session's records (by its ``x-session-id``) in the order they started."""
        page = await queries.session(
            session_id, tenant_id=caller.tenant_filter(tenant), limit=limit, after=after
        )
        return ListPage.of(page, ReplaySummaryOut.of)

    @routes.get("/{replay_id}", operation_id="get_replay", response_model=ReplayOut)
    async def get_replay(
        replay_id: Annotated[str, Path(pattern=REPLAY_ID)], caller: Caller
    ) -> ReplayOut:
        """One record, with captured bodies when its decision captured them."""
        return ReplayOut.of(await queries.get(replay_id, tenant_id=caller.tenant_filter(None)))

    return routes
