"""The ``jobs`` and ``job_events`` surfaces: durable workflow jobs and their numbered events.

Every change is one transaction on the job's locked row (``storage.jobs_writes``): submit,
claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's one writer serializes claims),
heartbeat, progress, checkpoint, finish, cancel, retry, requeue. A runner's writes carry its
:class:`JobFence` and are refused (LeaseLost, nothing changed) once another attempt or nobody
holds the lease. The recovery step requeues jobs whose lease expired or whose owner is not
live (from their checkpoint, attempt + 1 at the next claim), or ends them ``crashed`` after
``max_attempts``. Events are deleted with their job (ON DELETE CASCADE)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import Connection

from routekeeper.contract.jobs import (
    FINISHED,
    JobEventKind,
    JobEventRecord,
    JobFence,
    JobFilters,
    JobRecord,
    JobStatus,
    RequeueReason,
)
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.database import Database, after_commit
from routekeeper.storage.dialect import Dialect
from routekeeper.storage.jobs_recovery import requeue_orphans
from routekeeper.storage.jobs_writes import (
    append_event,
    check_fence,
    locked_job,
    move,
    release,
)
from routekeeper.storage.records import from_row, to_row
from routekeeper.storage.recovery import RecoveryStep
from routekeeper.storage.schema.jobs import job_events, jobs
from routekeeper.storage.surface_store import RetentionRule, SurfaceStore
from routekeeper.storage.types import utcnow

T = TypeVar("T")


def _job(row: Any) -> JobRecord:
    return from_row(JobRecord, row)


def _event(row: Any) -> JobEventRecord:
    return from_row(JobEventRecord, row)


@dataclass(frozen=True)
class JobFiltersSQL:
    filters: JobFilters

    def apply(self, query: Any, dialect: Dialect) -> Any:
        f, c = self.filters, jobs.c
        if f.tenant_id is not None:
            query = query.where(c.tenant_id == f.tenant_id)
        if f.status is not None:
            query = query.where(c.status == f.status.value)
        if f.kind is not None:
            query = query.where(c.kind == f.kind)
        if f.since is not None:
            query = query.where(c.created_at >= f.since)
        if f.until is not None:
            query = query.where(c.created_at < f.until)
        return query


@dataclass
class JobCounters:
    """What this process's recovery steps did since it started (``/metrics`` counters)."""

    lease_expiries: int = 0
    owner_crashes: int = 0
    crashed: int = 0


class JobsStore(SurfaceStore):
    tables = {"jobs": (jobs,), "job_events": (job_events,)}
    records = {jobs.name: JobRecord, job_events.name: JobEventRecord}
    lifecycle_columns = {"jobs": "status"}
    retention = {
        "jobs": RetentionRule(
            jobs,
            age_column="finished_at",
            state_column="status",
            states=frozenset(s.value for s in FINISHED),
        )
    }

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.counters = JobCounters()
        self.published: list[Callable[[str, bool], object]] = []
        """Called with a job id, and whether the job became claimable, after each commit that
        appended an event of that job (the in-process wake-up of streams and idle job slots;
        other processes learn it through NOTIFY or Redis)."""
        self._sync: Engine | None = None

    def publish(self, conn: Connection, job_id: str, *, claimable: bool = False) -> None:
        """Tell ``published`` about the job once ``conn``'s transaction has committed."""
        for callback in self.published:
            after_commit(conn, lambda cb=callback: cb(job_id, claimable))  # type: ignore[misc]

    async def _write(
        self, fn: Callable[[Connection], T], job_id: str, *, claimable: bool = False
    ) -> T:
        def run(conn: Connection) -> T:
            result = fn(conn)
            self.publish(conn, job_id, claimable=claimable)
            return result

        return await self.db.run_write(run)

    # -- client operations -----------------------------------------------------------------

    async def submit(self, job: JobRecord) -> JobRecord:
        """Store a new queued job with its ``job.submitted`` event (1)."""
        dialect = self.db.dialect

        def write(conn: Connection) -> None:
            conn.execute(jobs.insert().values(**to_row(job)))
            append_event(
                conn,
                dialect,
                job,
                JobEventKind.SUBMITTED,
                {
                    "kind": job.kind,
                    "max_attempts": job.max_attempts,
                    "routing_hash": job.routing_hash,
                },
                at=job.created_at,
            )

        await self._write(write, job.id, claimable=True)
        return await self.get(job.tenant_id, job.id)

    async def get(self, tenant_id: str | None, job_id: str) -> JobRecord:
        where = None if tenant_id is None else jobs.c.tenant_id == tenant_id
        return await self._one(jobs, job_id, _job, "job", where=where)

    async def list_jobs(
        self,
        filters: JobFilters,
        *,
        limit: int,
        order: SortOrder = SortOrder.DESC,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[JobRecord]:
        query = JobFiltersSQL(filters).apply(select(jobs), self.db.dialect)
        return await self._page(
            query, jobs.c.id, _job, limit=limit, order=order, after=after, before=before
        )

    async def events(
        self,
        tenant_id: str | None,
        job_id: str,
        *,
        limit: int,
        order: SortOrder = SortOrder.ASC,
        after: int | None = None,
        before: int | None = None,
    ) -> Page[JobEventRecord]:
        """The job's events by number (NotFound for an unknown job)."""
        await self.get(tenant_id, job_id)
        query = select(job_events).where(job_events.c.job_id == job_id)
        return await self._page(
            query, job_events.c.seq, _event, limit=limit, order=order, after=after, before=before
        )

    async def events_after(
        self, tenant_id: str | None, job_id: str, after: int, *, limit: int = 500
    ) -> list[JobEventRecord]:
        """Events numbered above ``after``, in order (what a stream sends next)."""
        query = (
            select(job_events)
            .where(job_events.c.job_id == job_id, job_events.c.seq > after)
            .order_by(job_events.c.seq)
            .limit(limit)
        )
        if tenant_id is not None:
            query = query.where(job_events.c.tenant_id == tenant_id)
        async with self.db.read() as conn:
            return [_event(r) for r in await conn.execute(query)]

    async def cancel(self, tenant_id: str | None, job_id: str) -> JobRecord:
        """Queued: ``cancelled`` at once. Running: ``cancelling`` (its runner stops and
        commits ``cancelled``). Cancelling: unchanged. Finished: InvalidTransition (409)."""
        dialect = self.db.dialect

        def write(conn: Connection) -> JobRecord:
            job = locked_job(conn, dialect, job_id, tenant_id)
            if job.status is JobStatus.CANCELLING:
                return job
            if job.status is JobStatus.QUEUED:
                return move(
                    conn,
                    dialect,
                    job,
                    JobStatus.CANCELLED,
                    JobEventKind.CANCELLED,
                    **release(JobStatus.CANCELLED),
                )
            return move(conn, dialect, job, JobStatus.CANCELLING, JobEventKind.CANCEL_REQUESTED)

        return await self._write(write, job_id)

    async def retry(self, tenant_id: str | None, job_id: str) -> JobRecord:
        """A failed, cancelled or crashed job queued again: same id, a fresh budget of
        ``max_attempts``, its checkpoint kept (InvalidTransition for any other status)."""
        dialect = self.db.dialect

        def write(conn: Connection) -> JobRecord:
            job = locked_job(conn, dialect, job_id, tenant_id)
            return move(
                conn,
                dialect,
                job,
                JobStatus.QUEUED,
                JobEventKind.RETRIED,
                {"attempt": job.attempt, "from_status": job.status.value},
                budget_start=job.attempt,
                error=None,
                result=None,
                finished_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )

        return await self._write(write, job_id, claimable=True)

    async def status_counts(self) -> dict[JobStatus, int]:
        query = select(jobs.c.status, func.count()).group_by(jobs.c.status)
        async with self.db.read(upkeep=True) as conn:
            rows = (await conn.execute(query)).all()
        return {JobStatus(status): int(n) for status, n in rows}

    # -- runner operations -----------------------------------------------------------------

    async def claim(
        self, owner: str, lease_seconds: float, kinds: Sequence[str]
    ) -> JobRecord | None:
        """Take the oldest queued job of one of ``kinds``: ``running`` under ``owner``'s
        lease, attempt + 1, with its ``job.started`` event. None when there is none."""
        dialect = self.db.dialect
        if not kinds:
            return None

        def write(conn: Connection) -> JobRecord | None:
            query = (
                select(jobs.c.id)
                .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.kind.in_(sorted(kinds)))
                .order_by(jobs.c.id)
                .limit(1)
            )
            if dialect.postgres:
                query = query.with_for_update(skip_locked=True)
            job_id = conn.execute(query).scalar_one_or_none()
            if job_id is None:
                return None
            job = locked_job(conn, dialect, job_id)
            now = utcnow()
            claimed = move(
                conn,
                dialect,
                job,
                JobStatus.RUNNING,
                JobEventKind.STARTED,
                {"attempt": job.attempt + 1, "owner": owner, "resumed": job.checkpoint is not None},
                attempt=job.attempt + 1,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                heartbeat_at=now,
                started_at=job.started_at or now,
            )
            self.publish(conn, job_id)
            return claimed

        return await self.db.run_write(write)

    async def heartbeat(self, fence: JobFence, lease_seconds: float) -> JobStatus:
        """Renew the lease; returns the job's status (``cancelling`` asks the runner to
        stop). LeaseLost when the fence no longer holds."""
        dialect = self.db.dialect

        def write(conn: Connection) -> JobStatus:
            job = check_fence(conn, dialect, fence)
            now = utcnow()
            conn.execute(
                update(jobs)
                .where(jobs.c.id == fence.job_id)
                .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
            )
            return job.status

        return await self.db.run_write(write)

    async def run_fenced(
        self,
        fence: JobFence,
        fn: Callable[[Connection, JobRecord], T],
        *,
        claimable: bool = False,
    ) -> T:
        """``fn(conn, job)`` in one write transaction after the fence check (LeaseLost, and
        nothing written, when it fails)."""
        dialect = self.db.dialect

        def write(conn: Connection) -> T:
            return fn(conn, check_fence(conn, dialect, fence))

        return await self._write(write, fence.job_id, claimable=claimable)

    async def progress(
        self, fence: JobFence, done: int, total: int | None, unit: str, message: str | None
    ) -> JobStatus:
        def write(conn: Connection, job: JobRecord) -> JobStatus:
            values = {
                "progress_done": done,
                "progress_total": total,
                "progress_unit": unit,
                "progress_message": message,
                "updated_at": utcnow(),
            }
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(**values))
            data = {"done": done, "total": total, "unit": unit, "message": message}
            append_event(conn, self.db.dialect, job, JobEventKind.PROGRESS, data)
            return job.status

        return await self.run_fenced(fence, write)

    async def save_checkpoint(
        self, fence: JobFence, checkpoint: dict[str, Any], done: int | None
    ) -> JobStatus:
        def write(conn: Connection, job: JobRecord) -> JobStatus:
            values: dict[str, Any] = {"checkpoint": checkpoint, "updated_at": utcnow()}
            if done is not None:
                values["progress_done"] = done
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(**values))
            append_event(
                conn,
                self.db.dialect,
                job,
                JobEventKind.CHECKPOINT,
                {"done": job.progress_done if done is None else done},
            )
            return job.status

        return await self.run_fenced(fence, write)

    async def finish(
        self,
        fence: JobFence,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> JobRecord:
        """End the run: ``succeeded`` (result), ``failed`` (error) or ``cancelled``. A job
        whose cancel was requested ends ``cancelled`` whatever the run came to."""
        kinds = {
            JobStatus.SUCCEEDED: JobEventKind.SUCCEEDED,
            JobStatus.FAILED: JobEventKind.FAILED,
            JobStatus.CANCELLED: JobEventKind.CANCELLED,
        }

        def write(conn: Connection, job: JobRecord) -> JobRecord:
            to = JobStatus.CANCELLED if job.status is JobStatus.CANCELLING else status
            values = release(to)
            data: dict[str, Any] = {}
            if to is JobStatus.SUCCEEDED:
                values["result"] = result
            if to is JobStatus.FAILED:
                values["error"] = data["error"] = error
            return move(conn, self.db.dialect, job, to, kinds[to], data, **values)

        return await self.run_fenced(fence, write)

    async def hand_back(self, fence: JobFence) -> JobRecord:
        """A runner that stops gracefully gives its job back: ``queued`` at once (or
        ``cancelled`` when a cancel was requested), the attempt not counted against
        ``max_attempts``. LeaseLost when it no longer holds the lease."""
        dialect = self.db.dialect

        def write(conn: Connection, job: JobRecord) -> JobRecord:
            data = {
                "attempt": job.attempt,
                "reason": RequeueReason.OWNER_STOPPED.value,
                "owner": fence.owner,
            }
            if job.status is JobStatus.CANCELLING:
                return move(
                    conn,
                    dialect,
                    job,
                    JobStatus.CANCELLED,
                    JobEventKind.CANCELLED,
                    data,
                    **release(JobStatus.CANCELLED),
                )
            return move(
                conn,
                dialect,
                job,
                JobStatus.QUEUED,
                JobEventKind.REQUEUED,
                data,
                budget_start=job.budget_start + 1,
                **release(JobStatus.QUEUED),
            )

        return await self.run_fenced(fence, write, claimable=True)

    # -- recovery --------------------------------------------------------------------------

    def recovery_steps(self) -> Sequence[RecoveryStep]:
        return (
            RecoveryStep(
                "jobs",
                "requeue jobs whose lease expired or whose owner is not live (from their "
                "checkpoint), or end them crashed after max_attempts",
                lambda ctx, dry_run: requeue_orphans(self, ctx, dry_run),
                periodic=True,
                after_crash=True,
            ),
        )
