"""The runtime_status / runtime_events store, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from routekeeper.contract.errors import InvalidRequest, InvalidTransition, NotFound
from routekeeper.contract.ids import new_id
from routekeeper.contract.pages import SortOrder
from routekeeper.contract.runtime import PhaseChange, ReplicaPhase, ReplicaRecord, RuntimeEventKind
from routekeeper.storage.schema.runtime import runtime_events
from routekeeper.storage.surface_store import RetentionPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _replica(replica_id: str, phase: ReplicaPhase = ReplicaPhase.MIGRATING) -> ReplicaRecord:
    return ReplicaRecord(
        id=replica_id,
        phase=phase,
        host="h",
        pid=1,
        listen="127.0.0.1:1",
        version="t",
        started_at=T0,
        heartbeat_at=T0,
        updated_at=T0,
    )


async def _registered(storage, replica_id=None):
    replica_id = replica_id or new_id("rep")
    history = [
        PhaseChange(None, ReplicaPhase.STARTING, T0),
        PhaseChange(ReplicaPhase.STARTING, ReplicaPhase.MIGRATING, T0 + timedelta(seconds=1)),
    ]
    await storage.runtime.register(_replica(replica_id), history)
    return replica_id


async def test_register_stores_the_row_and_its_early_history(state_storage):
    rid = await _registered(state_storage)
    record = await state_storage.runtime.get(rid)
    assert record.phase is ReplicaPhase.MIGRATING
    assert record.started_at == T0 and record.started_at.tzinfo is not None
    events = await state_storage.runtime.list_events(replica_id=rid, order=SortOrder.ASC)
    assert [(e.from_phase, e.to_phase) for e in events.data] == [
        (None, ReplicaPhase.STARTING),
        (ReplicaPhase.STARTING, ReplicaPhase.MIGRATING),
    ]
    assert events.data[1].occurred_at == T0 + timedelta(seconds=1)


async def test_transitions_write_row_and_event_together(state_storage):
    rid = await _registered(state_storage)
    for phase in (ReplicaPhase.RECOVERING, ReplicaPhase.READY, ReplicaPhase.DRAINING):
        await state_storage.runtime.transition(rid, phase)
    stopped = await state_storage.runtime.transition(rid, ReplicaPhase.STOPPED, detail="bye")
    assert stopped.phase is ReplicaPhase.STOPPED and stopped.stopped_at is not None
    events = await state_storage.runtime.list_events(
        replica_id=rid, kind=RuntimeEventKind.REPLICA_PHASE_CHANGED, order=SortOrder.ASC
    )
    assert [e.to_phase.value for e in events.data] == [
        "starting",
        "migrating",
        "recovering",
        "ready",
        "draining",
        "stopped",
    ]
    assert events.data[-1].data == {"detail": "bye"}


async def test_a_refused_transition_changes_nothing(state_storage):
    rid = await _registered(state_storage)
    db = state_storage.database_for("runtime_events")
    before = await db.count_rows(runtime_events)
    with pytest.raises(InvalidTransition, match="migrating to stopped"):
        await state_storage.runtime.transition(rid, ReplicaPhase.STOPPED)
    assert (await state_storage.runtime.get(rid)).phase is ReplicaPhase.MIGRATING
    assert await db.count_rows(runtime_events) == before


async def test_event_rolls_back_with_a_failed_transaction(state_storage):
    """The row update and its event are one transaction: an error after both leaves neither."""
    rid = await _registered(state_storage)
    db = state_storage.database_for("runtime_status")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.write() as conn:
            from sqlalchemy import insert, update

            from routekeeper.storage.schema.runtime import runtime_replicas

            await conn.execute(
                update(runtime_replicas)
                .where(runtime_replicas.c.id == rid)
                .values(phase="recovering")
            )
            await conn.execute(
                insert(runtime_events).values(
                    replica_id=rid,
                    kind="replica.phase_changed",
                    from_phase="migrating",
                    to_phase="recovering",
                    data={},
                    occurred_at=T0,
                )
            )
            raise Boom
    assert (await state_storage.runtime.get(rid)).phase is ReplicaPhase.MIGRATING
    async with db.read() as conn:
        n = (
            await conn.execute(
                select(func.count())
                .select_from(runtime_events)
                .where(runtime_events.c.replica_id == rid)
            )
        ).scalar_one()
    assert n == 2


async def test_unknown_replica_is_not_found(state_storage):
    with pytest.raises(NotFound):
        await state_storage.runtime.get("rep_nope")
    with pytest.raises(NotFound):
        await state_storage.runtime.transition("rep_nope", ReplicaPhase.READY)


async def test_heartbeat_moves_only_the_heartbeat(state_storage):
    rid = await _registered(state_storage)
    later = T0 + timedelta(minutes=5)
    await state_storage.runtime.heartbeat(rid, at=later)
    record = await state_storage.runtime.get(rid)
    assert record.heartbeat_at == later and record.updated_at == T0


async def test_replica_pages_walk_forwards_and_backwards_without_gaps(state_storage):
    ids = [await _registered(state_storage, new_id("rep", now_ms=1_000_000 + i)) for i in range(7)]
    seen, after = [], None
    while True:
        page = await state_storage.runtime.list_replicas(limit=3, order=SortOrder.ASC, after=after)
        seen += [r.id for r in page.data]
        assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
        if not page.has_more:
            break
        after = page.last_id
    assert seen == ids
    newest = await state_storage.runtime.list_replicas(limit=3)
    assert [r.id for r in newest.data] == ids[::-1][:3]
    previous = await state_storage.runtime.list_replicas(limit=3, before=ids[3])
    assert [r.id for r in previous.data] == [ids[6], ids[5], ids[4]]
    filtered = await state_storage.runtime.list_replicas(phases=[ReplicaPhase.READY])
    assert filtered.data == [] and filtered.first_id is None and not filtered.has_more
    with pytest.raises(InvalidRequest):
        await state_storage.runtime.list_replicas(limit=0)


async def test_prune_removes_old_events_and_finished_replicas_only(state_storage):
    old = await _registered(state_storage)
    for phase in (ReplicaPhase.DRAINING, ReplicaPhase.STOPPED):
        await state_storage.runtime.transition(old, phase, at=T0 + timedelta(seconds=2))
    live = await _registered(state_storage)
    now = T0 + timedelta(seconds=1, milliseconds=500)
    events = await state_storage.runtime.prune(
        "runtime_events", RetentionPolicy(max_age=timedelta(0)), now=now
    )
    replicas = await state_storage.runtime.prune(
        "runtime_status", RetentionPolicy(max_age=timedelta(0)), now=T0 + timedelta(days=1)
    )
    assert replicas == 1
    assert events == 4  # each replica's "starting" (T0) and "migrating" (T0+1s) events
    with pytest.raises(NotFound):
        await state_storage.runtime.get(old)
    assert (await state_storage.runtime.get(live)).phase is ReplicaPhase.MIGRATING


async def test_concurrent_sweepers_record_a_crash_exactly_once(state_settings, state_storage):
    """Eight sweepers on their own connections race to mark one dead replica."""
    import asyncio

    from routekeeper.contract.runtime import CrashReason
    from routekeeper.storage.state import StateStorage

    rid = await _registered(state_storage)
    sweepers = [StateStorage(state_settings) for _ in range(8)]
    for s in sweepers:
        await s.open()
    try:
        results = await asyncio.gather(
            *(
                s.runtime.mark_crashed(rid, reason=CrashReason.LOCK_FREE, detected_by=f"rep_{i}")
                for i, s in enumerate(sweepers)
            )
        )
    finally:
        for s in sweepers:
            await s.close()
    assert sorted(results) == [False] * 7 + [True]
    crashed = await state_storage.runtime.list_events(
        replica_id=rid, kind=RuntimeEventKind.REPLICA_CRASHED
    )
    assert len(crashed.data) == 1
    assert crashed.data[0].data["last_heartbeat_at"] == T0.isoformat()
    assert (await state_storage.runtime.get(rid)).phase is ReplicaPhase.CRASHED
    # a crashed replica no longer takes heartbeats: it learns it was declared dead
    assert await state_storage.runtime.heartbeat(rid) is False
