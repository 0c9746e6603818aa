"""The jobs store on SQLite and PostgreSQL: every move appends one event numbered 1, 2, 3, ...
per job; claims take distinct jobs; a runner's writes are fenced by owner and attempt (a
runner that lost its lease is refused and changes nothing); recovery requeues from the
checkpoint, then crashes after max_attempts; retry gives a fresh budget; cancel."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from routekeeper.contract.errors import InvalidTransition
from routekeeper.contract.ids import new_id
from routekeeper.contract.jobs import (
    JobEventKind,
    JobFence,
    JobFilters,
    JobRecord,
    JobStatus,
    LeaseLost,
)
from routekeeper.contract.pages import SortOrder
from routekeeper.storage.jobs_store import JobsStore
from routekeeper.storage.recovery import RecoveryContext
from routekeeper.storage.schema.jobs import job_events, jobs
from routekeeper.storage.surface_store import RetentionPolicy
from routekeeper.storage.types import utcnow


def _job(max_attempts=3, kind="count"):
    now = utcnow()
    return JobRecord(
        id=new_id("job"),
        tenant_id="default",
        kind=kind,
        status=JobStatus.QUEUED,
        params={"to": 3},
        input={"to": 3},
        routing_config={},
        routing_hash="h",
        attempt=0,
        max_attempts=max_attempts,
        budget_start=0,
        created_at=now,
        updated_at=now,
    )


def _ctx(storage, live_owner=None):
    return RecoveryContext(
        storage, live_owner, stale_after_seconds=10, healthy_for_seconds=float("inf")
    )


async def _events(store, job_id):
    page = await store.events("default", job_id, limit=100, order=SortOrder.ASC)
    return [(e.seq, e.kind, e.attempt) for e in page.data]


async def _rows(store, job_id):
    async with store.db.read() as conn:
        job = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).one()
        events = (await conn.execute(select(job_events).where(job_events.c.job_id == job_id))).all()
    return tuple(job), sorted(tuple(e) for e in events)


async def test_every_move_appends_one_event_numbered_in_order(state_storage):
    store = state_storage.store(JobsStore)
    job = await store.submit(_job())
    claimed = await store.claim("rep_a", 15, ["count"])
    assert claimed is not None and claimed.id == job.id and claimed.attempt == 1
    fence = JobFence(job.id, "rep_a", 1)
    await store.progress(fence, 1, 3, "steps", "one")
    await store.save_checkpoint(fence, {"done": 2}, 2)
    assert await store.heartbeat(fence, 15) is JobStatus.RUNNING
    done = await store.finish(fence, JobStatus.SUCCEEDED, result={"counted": 3})
    assert done.status is JobStatus.SUCCEEDED and done.result == {"counted": 3}
    assert done.lease_owner is None and done.finished_at is not None
    assert done.checkpoint == {"done": 2} and done.progress_done == 2
    assert await _events(store, job.id) == [
        (1, JobEventKind.SUBMITTED, 0),
        (2, JobEventKind.STARTED, 1),
        (3, JobEventKind.PROGRESS, 1),
        (4, JobEventKind.CHECKPOINT, 1),
        (5, JobEventKind.SUCCEEDED, 1),
    ]
    assert done.next_event == 6
    assert [e.seq for e in await store.events_after("default", job.id, 3)] == [4, 5]
    assert await store.events_after("other-tenant", job.id, 0) == []
    with pytest.raises(InvalidTransition):
        await store.cancel("default", job.id)


async def test_concurrent_claims_take_distinct_jobs(state_storage):
    store = state_storage.store(JobsStore)
    submitted = {(await store.submit(_job())).id for _ in range(8)}
    await store.submit(_job(kind="other"))
    claims = await asyncio.gather(*(store.claim(f"rep_{n}", 15, ["count"]) for n in range(10)))
    taken = [c.id for c in claims if c is not None]
    assert sorted(taken) == sorted(submitted)
    assert await store.claim("rep_x", 15, ["count"]) is None


async def test_a_runner_that_lost_its_lease_is_refused_and_changes_nothing(state_storage):
    store = state_storage.store(JobsStore)
    job = await store.submit(_job())
    await store.claim("rep_a", 15, ["count"])
    old = JobFence(job.id, "rep_a", 1)
    await store.save_checkpoint(old, {"done": 1}, 1)
    # rep_a is cut off: its lease runs out; recovery (on a live replica) requeues the job and
    # rep_b takes it as attempt 2.
    async with store.db.write() as conn:
        await conn.execute(
            jobs.update()
            .where(jobs.c.id == job.id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    report = await store.recovery_steps()[0].run(_ctx(state_storage, "rep_a"), False)
    assert report.counts["requeued"] == 1
    taken = await store.claim("rep_b", 15, ["count"])
    assert taken is not None and taken.attempt == 2 and taken.checkpoint == {"done": 1}
    before = await _rows(store, job.id)

    with pytest.raises(LeaseLost):
        await store.progress(old, 2, 3, "steps", None)
    with pytest.raises(LeaseLost):
        await store.save_checkpoint(old, {"done": 2}, 2)
    with pytest.raises(LeaseLost):
        await store.heartbeat(old, 15)
    with pytest.raises(LeaseLost):
        await store.finish(old, JobStatus.SUCCEEDED, result={"late": True})
    with pytest.raises(LeaseLost):
        await store.run_fenced(old, lambda conn, _job: conn.execute(text("DELETE FROM job_events")))
    assert await _rows(store, job.id) == before

    # The holder's fenced writes go through.
    holder = JobFence(job.id, "rep_b", 2)
    await store.run_fenced(
        holder,
        lambda conn, _job: conn.execute(
            jobs.update().where(jobs.c.id == job.id).values(progress_message="b")
        ),
    )
    assert (await store.get("default", job.id)).progress_message == "b"
    kinds = [k for _, k, _ in await _events(store, job.id)]
    assert kinds == [
        JobEventKind.SUBMITTED,
        JobEventKind.STARTED,
        JobEventKind.CHECKPOINT,
        JobEventKind.REQUEUED,
        JobEventKind.STARTED,
    ]


async def test_a_dead_owner_requeues_at_once_and_max_attempts_ends_crashed(state_storage):
    store = state_storage.store(JobsStore)
    job = await store.submit(_job(max_attempts=2))
    for attempt in (1, 2):
        claimed = await store.claim(f"rep_{attempt}", 15, ["count"])
        assert claimed is not None and claimed.attempt == attempt
        # Its lease is still valid, but its owner is not a live replica.
        report = await store.recovery_steps()[0].run(_ctx(state_storage), False)
        assert sum(report.counts.values()) == 1
    crashed = await store.get("default", job.id)
    assert crashed.status is JobStatus.CRASHED and crashed.lease_owner is None
    assert store.counters.owner_crashes == 2 and store.counters.crashed == 1

    retried = await store.retry("default", job.id)
    assert retried.status is JobStatus.QUEUED and retried.budget_start == 2
    again = await store.claim("rep_3", 15, ["count"])
    assert again is not None and again.attempt == 3
    report = await store.recovery_steps()[0].run(_ctx(state_storage), False)
    assert report.counts["requeued"] == 1  # a fresh budget of max_attempts
    with pytest.raises(InvalidTransition):
        await store.retry("default", job.id)


async def test_cancel_queued_at_once_running_through_its_runner(state_storage):
    store = state_storage.store(JobsStore)
    queued = await store.submit(_job())
    assert (await store.cancel("default", queued.id)).status is JobStatus.CANCELLED
    running = await store.submit(_job())
    await store.claim("rep_a", 15, ["count"])
    fence = JobFence(running.id, "rep_a", 1)
    assert (await store.cancel("default", running.id)).status is JobStatus.CANCELLING
    assert (await store.cancel("default", running.id)).status is JobStatus.CANCELLING
    assert await store.heartbeat(fence, 15) is JobStatus.CANCELLING
    # Whatever the run came to, a requested cancel wins.
    ended = await store.finish(fence, JobStatus.SUCCEEDED, result={})
    assert ended.status is JobStatus.CANCELLED and ended.result is None
    retried = await store.retry("default", running.id)
    assert retried.status is JobStatus.QUEUED
    with pytest.raises(Exception, match="no job"):
        await store.cancel("other-tenant", running.id)


async def test_retention_prunes_finished_jobs_with_their_events(state_storage):
    store = state_storage.store(JobsStore)
    old = await store.submit(_job())
    await store.cancel("default", old.id)
    running = await store.submit(_job())
    await store.claim("rep_a", 15, ["count"])
    async with store.db.write() as conn:
        await conn.execute(
            jobs.update().values(
                finished_at=utcnow() - timedelta(days=40), created_at=utcnow() - timedelta(days=40)
            )
        )
    assert await store.prune("jobs", RetentionPolicy(max_age=timedelta(days=30))) == 1
    assert [j.id for j in (await store.list_jobs(JobFilters(tenant_id=None), limit=10)).data] == [
        running.id
    ]
    async with store.db.read() as conn:
        left = (await conn.execute(select(job_events.c.job_id).distinct())).scalars().all()
    assert left == [running.id]
