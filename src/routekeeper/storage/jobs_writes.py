"""The writes of the ``jobs`` surface, as plain functions on a synchronous ``Connection``
inside a write transaction (no transaction of their own, no I/O): lock the job's row, check
the move against the lifecycle, update it, append its event numbered from the row's
``next_event`` counter. Taking the number under the row lock is what makes a job's events
commit in their numeric order (a sequence would not), so a reader resuming after N never
skips one.

:func:`check_fence` is the check every runner write starts with: a kind's own rows (per-item
results) are written after it, in the same transaction (``JobsStore.run_fenced``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import Connection

from routekeeper.contract.errors import NotFound
from routekeeper.contract.jobs import (
    JOB_LIFECYCLE,
    LEASED,
    JobEventKind,
    JobFence,
    JobRecord,
    JobStatus,
    LeaseLost,
)
from routekeeper.storage.dialect import Dialect
from routekeeper.storage.records import from_row
from routekeeper.storage.schema.jobs import job_events, jobs
from routekeeper.storage.types import utcnow

NOTIFY_CHANNEL = "routekeeper_job_events"
"""The PostgreSQL channel a committed job event is announced on (payload: the job id, then
`` claimable`` when the event made the job claimable)."""
CLAIMABLE = frozenset({JobEventKind.SUBMITTED, JobEventKind.REQUEUED, JobEventKind.RETRIED})
"""Events after which the job is queued: idle job slots wake for them."""


def job_not_found(job_id: str) -> NotFound:
    error = NotFound(f"no job {job_id}")
    error.param = "job_id"
    return error


def locked_job(
    conn: Connection, dialect: Dialect, job_id: str, tenant_id: str | None = None
) -> JobRecord:
    """The job's row, locked until the transaction ends; NotFound (also for another
    tenant's job)."""
    query = select(jobs).where(jobs.c.id == job_id)
    if tenant_id is not None:
        query = query.where(jobs.c.tenant_id == tenant_id)
    row = conn.execute(dialect.for_update(query)).one_or_none()
    if row is None:
        raise job_not_found(job_id)
    return from_row(JobRecord, row)


def check_fence(conn: Connection, dialect: Dialect, fence: JobFence) -> JobRecord:
    """Lock the job and check that ``fence`` still holds its lease (owner and attempt, in a
    leased status); LeaseLost otherwise, before anything is written."""
    job = locked_job(conn, dialect, fence.job_id)
    if job.status not in LEASED or job.lease_owner != fence.owner or job.attempt != fence.attempt:
        raise LeaseLost(
            f"job {fence.job_id}: attempt {fence.attempt} of {fence.owner} no longer holds "
            f"the lease (now {job.status}, attempt {job.attempt}, owner {job.lease_owner})",
            details={"job_id": fence.job_id, "attempt": job.attempt, "status": job.status},
        )
    return job


def append_event(
    conn: Connection,
    dialect: Dialect,
    job: JobRecord,
    kind: JobEventKind,
    data: Mapping[str, Any] | None = None,
    *,
    status: JobStatus | None = None,
    attempt: int | None = None,
    at: datetime | None = None,
) -> int:
    """Append the job's next event (its row must be locked by this transaction) and advance
    its counter; returns the event's number. On PostgreSQL the commit announces it."""
    seq = job.next_event
    conn.execute(
        insert(job_events).values(
            job_id=job.id,
            tenant_id=job.tenant_id,
            seq=seq,
            kind=kind.value,
            status=(status or job.status).value,
            attempt=job.attempt if attempt is None else attempt,
            occurred_at=at or utcnow(),
            data=dict(data or {}),
        )
    )
    conn.execute(update(jobs).where(jobs.c.id == job.id).values(next_event=seq + 1))
    if dialect.postgres:  # delivered at commit, never before; readers then read the table
        payload = f"{job.id} claimable" if kind in CLAIMABLE else job.id
        conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": payload},
        )
    return seq


def move(
    conn: Connection,
    dialect: Dialect,
    job: JobRecord,
    to_status: JobStatus,
    kind: JobEventKind,
    data: Mapping[str, Any] | None = None,
    **values: Any,
) -> JobRecord:
    """Move the locked ``job`` to ``to_status`` (InvalidTransition unless the lifecycle
    allows it) with ``values``, appending its event; returns the job as updated."""
    JOB_LIFECYCLE.check(job.id, job.status, to_status)
    now = utcnow()
    values = {"status": to_status.value, "updated_at": now, **values}
    conn.execute(update(jobs).where(jobs.c.id == job.id).values(**values))
    attempt = values.get("attempt", job.attempt)
    append_event(conn, dialect, job, kind, data, status=to_status, attempt=attempt, at=now)
    row = conn.execute(select(jobs).where(jobs.c.id == job.id)).one()
    return from_row(JobRecord, row)


def release(status: JobStatus, **values: Any) -> dict[str, Any]:
    """Column values of a job that leaves its lease (and, when finished, its time)."""
    out: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, **values}
    if status is not JobStatus.QUEUED:
        out.setdefault("finished_at", utcnow())
    return out
