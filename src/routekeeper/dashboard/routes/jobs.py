"""``/api/jobs``: durable workflow jobs. Submit (``kind``, ``params``), list, show, the events
(a page, or a live SSE stream resumable with ``Last-Event-ID``), cancel and retry. Every
answer follows the commit it reports. A job belongs to the tenant of the key that submitted
it (``default`` with auth off); these routes are for admin keys, which see every tenant's
jobs (``tenant=`` narrows the list)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from routekeeper import sse
from routekeeper.contract.auth import TENANT_PATTERN
from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.ids import id_pattern
from routekeeper.contract.jobs import JobEventRecord, JobFilters, JobRecord, JobStatus
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, SortOrder
from routekeeper.dashboard.query import TenantParam, api_router
from routekeeper.dashboard.routes.replay import time_window
from routekeeper.http.access import Caller
from routekeeper.http.errors import ensure_json_safe
from routekeeper.http.pages import Limit, ListPage, Order
from routekeeper.jobs.service import JobsService

JobId = Annotated[str, Path(pattern=id_pattern("job"), description="A job id (`job_...`).")]
JobCursor = Annotated[str | None, Query(pattern=id_pattern("job"), description="A job id.")]
EventCursor = Annotated[
    int | None, Query(ge=0, le=2_147_483_647, description="An event number of the job.")
]


class SubmitJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64, description="The job kind, e.g. `count`.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The kind's parameters (checked at submit)."
    )
    tenant: str | None = Field(
        None,
        pattern=TENANT_PATTERN,
        description="The tenant the job runs for (default: the submitting key's).",
    )


class ProgressOut(BaseModel):
    done: int
    total: int | None
    unit: str | None
    message: str | None


class JobOut(BaseModel):
    """A job as clients see it (its stored input and routing snapshot stay server-side; the
    snapshot is named by its hash)."""

    id: str
    tenant: str
    kind: str
    status: JobStatus
    params: dict[str, Any]
    routing_hash: str
    attempt: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    checkpoint: dict[str, Any] | None
    progress: ProgressOut
    result: dict[str, Any] | None
    error: str | None
    last_event: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        return cls(
            id=job.id,
            tenant=job.tenant_id,
            kind=job.kind,
            status=job.status,
            params=job.params,
            routing_hash=job.routing_hash,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            lease_owner=job.lease_owner,
            lease_expires_at=job.lease_expires_at,
            heartbeat_at=job.heartbeat_at,
            checkpoint=job.checkpoint,
            progress=ProgressOut(
                done=job.progress_done,
                total=job.progress_total,
                unit=job.progress_unit,
                message=job.progress_message,
            ),
            result=job.result,
            error=job.error,
            last_event=job.next_event - 1,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class JobEventOut(BaseModel):
    """One event: ``seq`` is its number within the job (the SSE ``id``)."""

    seq: int
    job_id: str
    type: str
    status: JobStatus
    attempt: int
    occurred_at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: JobEventRecord) -> JobEventOut:
        return cls(
            seq=event.seq,
            job_id=event.job_id,
            type=event.kind.value,
            status=event.status,
            attempt=event.attempt,
            occurred_at=event.occurred_at,
            data=event.data,
        )


def job_filters(
    caller: Caller,
    tenant: TenantParam = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    kind: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Only jobs of this kind.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Submitted at or after (ISO).")] = None,
    until: Annotated[datetime | None, Query(description="Submitted before (ISO).")] = None,
) -> JobFilters:
    since, until = time_window(since, until)
    return JobFilters(
        tenant_id=caller.tenant_filter(tenant),
        status=status,
        kind=kind,
        since=since,
        until=until,
    )


def resume_point(last_event_id: str | None, after: int | None) -> int:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnecting EventSource sends it)
    or ``after``; 0 is the beginning."""
    if last_event_id is None or not last_event_id.strip():
        return after or 0
    try:
        value = int(last_event_id.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= 2_147_483_647:
        message = "must be an event number (0 to 2147483647)"
        raise InvalidRequest(
            f"last-event-id {message}, got {last_event_id[:40]!r}",
            param="last-event-id",
            details={"problems": [{"param": "last-event-id", "message": message}]},
        )
    return value


def router(
    jobs: JobsService,
    *,
    ping_seconds: float,
    until: Callable[[], float | None],
) -> APIRouter:
    """``until``: the loop time by which streams must end (the shutdown deadline)."""
    routes = api_router(prefix="/api/jobs", tags=["jobs"])

    @routes.post("", operation_id="submit_job", status_code=201, response_model=JobOut)
    async def submit_job(body: SubmitJob, caller: Caller) -> JobOut:
        """Queue a job for ``tenant`` (default: the caller's); its params are checked by its
        kind (400 naming the field)."""
        ensure_json_safe(body.params)  # stored and shown as JSON: no lone surrogates
        tenant = body.tenant if body.tenant is not None else caller.tenant
        return JobOut.of(await jobs.submit(tenant, body.kind, body.params))

    @routes.get("", operation_id="list_jobs", response_model=ListPage[JobOut])
    async def list_jobs(
        filters: Annotated[JobFilters, Depends(job_filters)],
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: JobCursor = None,
        before: JobCursor = None,
    ) -> ListPage[JobOut]:
        """Jobs, newest first; filters by status, kind and submission time."""
        page = await jobs.list(filters, limit=limit, order=order, after=after, before=before)
        return ListPage.of(page, JobOut.of)

    @routes.get("/{job_id}", operation_id="get_job", response_model=JobOut)
    async def get_job(job_id: JobId, caller: Caller) -> JobOut:
        return JobOut.of(await jobs.get(caller.tenant_filter(None), job_id))

    @routes.get(
        "/{job_id}/events", operation_id="list_job_events", response_model=ListPage[JobEventOut]
    )
    async def list_job_events(
        job_id: JobId,
        caller: Caller,
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.ASC,
        after: EventCursor = None,
        before: EventCursor = None,
    ) -> ListPage[JobEventOut]:
        """The job's events by number, oldest first."""
        page = await jobs.events(
            caller.tenant_filter(None), job_id, limit=limit, order=order, after=after, before=before
        )
        return ListPage.of(page, JobEventOut.of)

    @routes.get(
        "/{job_id}/stream",
        operation_id="stream_job_events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream_job_events(
        job_id: JobId,
        caller: Caller,
        after: EventCursor = None,
        last_event_id: Annotated[
            str | None,
            Header(alias="last-event-id", description="Resume after this event number."),
        ] = None,
    ) -> StreamingResponse:
        """Server-sent events: every event after ``Last-Event-ID`` (or ``after``), each once,
        with its number as ``id`` and its type as ``event``; ends after the terminal event."""
        start = resume_point(last_event_id, after)
        events = await jobs.stream(caller.tenant_filter(None), job_id, start)
        return StreamingResponse(
            sse.encoded(_framed(events, ping_seconds, until)),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
        )

    @routes.post("/{job_id}/cancel", operation_id="cancel_job", response_model=JobOut)
    async def cancel_job(job_id: JobId, caller: Caller) -> JobOut:
        """Queued: cancelled now. Running: cancelling; cancelled within
        jobs.heartbeat_seconds + 1 s. Finished: 409."""
        return JobOut.of(await jobs.cancel(caller.tenant_filter(None), job_id))

    @routes.post("/{job_id}/retry", operation_id="retry_job", response_model=JobOut)
    async def retry_job(job_id: JobId, caller: Caller) -> JobOut:
        """A failed, cancelled or crashed job queued again: same id, attempt + 1 from its
        last checkpoint, a fresh budget of jobs.max_attempts (409 for other statuses)."""
        return JobOut.of(await jobs.retry(caller.tenant_filter(None), job_id))

    return routes


async def _framed(
    events: Any, ping_seconds: float, until: Callable[[], float | None]
) -> AsyncGenerator[sse.Data | sse.Ping, None]:
    paced = sse.Paced(events, ping_seconds=ping_seconds, until=until)
    try:
        async for item in paced:
            if isinstance(item, sse.Deadline):
                return
            if isinstance(item, sse.Ping):
                yield item
                continue
            body = JobEventOut.of(item).model_dump(mode="json")
            yield sse.Data(json.dumps(body, separators=(",", ":")), id=item.seq, event=body["type"])
    finally:
        await paced.aclose()
        await events.aclose()
