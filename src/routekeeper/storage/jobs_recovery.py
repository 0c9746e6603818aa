"""The recovery step of the ``jobs`` surface: what a dead or cut-off runner left.

A job whose lease expired, or whose lease owner is not a live replica (recorded crashed,
stopped or failed), is requeued at once with its checkpoint (the next claim is attempt + 1),
ends ``crashed`` when its budget of ``max_attempts`` is used up, or ``cancelled`` when a
cancel was already requested. A job that is not running holds no lease: one that does has it
cleared. Each repair is one transaction on the job's locked row, with its event; a job
renewed or moved meanwhile is left alone. Runs at start, on every sweep and after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from routekeeper.contract.jobs import LEASED, JobEventKind, JobRecord, JobStatus, RequeueReason
from routekeeper.storage.jobs_writes import locked_job, move, release
from routekeeper.storage.records import from_row
from routekeeper.storage.recovery import RecoveryContext, RecoveryReport
from routekeeper.storage.schema.jobs import jobs
from routekeeper.storage.types import utcnow

if TYPE_CHECKING:
    from routekeeper.storage.jobs_store import JobsStore

OUTCOMES = ("requeued", "crashed", "cancelled", "leases_cleared")


async def requeue_orphans(store: JobsStore, ctx: RecoveryContext, dry_run: bool) -> RecoveryReport:
    live = await ctx.live_replica_ids()
    now = utcnow()
    c = jobs.c
    # By status (indexed): finished jobs, however many, are never read here.
    leased = [s.value for s in LEASED]
    query = select(jobs).where(
        c.status.in_([*leased, JobStatus.QUEUED.value]),
        c.lease_owner.is_not(None) | c.status.in_(leased),
    )
    async with store.db.read(upkeep=True) as conn:
        found = [from_row(JobRecord, r) for r in await conn.execute(query)]
    orphans = [j for j in found if orphaned(j, live, now)]
    counts = dict.fromkeys(OUTCOMES, 0)
    if dry_run:
        for job in orphans:
            counts[outcome_of(job)] += 1
        return RecoveryReport(
            "jobs", counts, dry_run, findings=[f"{j.id}: {j.status}" for j in orphans]
        )
    for job in orphans:
        outcome = await store.db.run_write(_repairing(store, job.id, live))
        if outcome is not None:
            counts[outcome] += 1
    return RecoveryReport("jobs", counts, dry_run)


def _repairing(store: JobsStore, job_id: str, live: set[str]) -> Callable[[Connection], str | None]:
    return lambda conn: _repair(store, conn, job_id, live)


def _repair(store: JobsStore, conn: Connection, job_id: str, live: set[str]) -> str | None:
    dialect = store.db.dialect
    job = locked_job(conn, dialect, job_id)
    now = utcnow()
    if not orphaned(job, live, now):
        return None  # renewed or moved meanwhile
    outcome = outcome_of(job)
    if outcome == "leases_cleared":
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(lease_owner=None, lease_expires_at=None)
        )
        return outcome
    expired = job.lease_expires_at is None or job.lease_expires_at <= now
    reason = RequeueReason.LEASE_EXPIRED if expired else RequeueReason.OWNER_CRASHED
    data = {"attempt": job.attempt, "reason": reason.value, "owner": job.lease_owner}
    counters = store.counters
    if reason is RequeueReason.LEASE_EXPIRED:
        counters.lease_expiries += 1
    else:
        counters.owner_crashes += 1
    if outcome == "cancelled":
        move(
            conn,
            dialect,
            job,
            JobStatus.CANCELLED,
            JobEventKind.CANCELLED,
            data,
            **release(JobStatus.CANCELLED),
        )
    elif outcome == "crashed":
        counters.crashed += 1
        error = f"crashed: {reason.value} after {job.attempt - job.budget_start} attempts"
        move(
            conn,
            dialect,
            job,
            JobStatus.CRASHED,
            JobEventKind.CRASHED,
            data,
            **release(JobStatus.CRASHED, error=error),
        )
    else:
        move(
            conn,
            dialect,
            job,
            JobStatus.QUEUED,
            JobEventKind.REQUEUED,
            data,
            **release(JobStatus.QUEUED),
        )
    store.publish(conn, job_id, claimable=outcome == "requeued")
    return outcome


def orphaned(job: JobRecord, live: set[str], now: datetime) -> bool:
    if job.status in LEASED:
        expired = job.lease_expires_at is None or job.lease_expires_at <= now
        return expired or job.lease_owner not in live
    return job.lease_owner is not None  # only a running job holds a lease


def outcome_of(job: JobRecord) -> str:
    if job.status is JobStatus.CANCELLING:
        return "cancelled"
    if job.status is not JobStatus.RUNNING:
        return "leases_cleared"
    if job.attempt - job.budget_start >= job.max_attempts:
        return "crashed"
    return "requeued"
