"""The router_replay store and the batched recorder, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from routekeeper.contract.errors import NotFound
from routekeeper.contract.ids import new_id
from routekeeper.contract.pages import SortOrder
from routekeeper.contract.replay import LifecycleState, ReplayRecord, TerminalReason
from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.storage.replay_store import ReplayFilters
from routekeeper.storage.surface_store import RetentionPolicy

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def record(i: int, **kw) -> ReplayRecord:
    base = dict(
        id=new_id("rpl", now_ms=1_700_000_000_000 + i),
        request_id=f"req_{i}",
        replica_id=kw.pop("replica_id", "rep_a"),
        endpoint="/v1/chat/completions",
        started_at=T0 + timedelta(seconds=i),
        requested_model="auto",
        selected_model="small" if i % 2 else "large",
        decision="default" if i % 2 else "coding",
        stream=False,
        session_id=f"s{i % 3}",
        signals={"keywords": [{"name": "code", "score": 1.0}]} if not i % 2 else {},
    )
    base.update(kw)
    return ReplayRecord(**base)


async def test_batch_inserts_and_updates_in_one_go(state_storage):
    store = state_storage.replay
    a, b = record(1), record(2)
    await store.write_batch([a, b], [])
    await store.write_batch(
        [],
        [
            (
                a.id,
                {
                    "lifecycle_state": LifecycleState.COMPLETED,
                    "terminal_reason": TerminalReason.RESPONSE_COMPLETE,
                    "total_tokens": 9,
                },
            ),
            (b.id, {"lifecycle_state": LifecycleState.FAILED, "upstream_status": 500}),
        ],
    )
    got_a, got_b = await store.get(a.id), await store.get(b.id)
    assert got_a.lifecycle_state is LifecycleState.COMPLETED and got_a.total_tokens == 9
    assert got_a.terminal_reason is TerminalReason.RESPONSE_COMPLETE
    assert got_b.lifecycle_state is LifecycleState.FAILED and got_b.upstream_status == 500
    assert got_b.signals == {"keywords": [{"name": "code", "score": 1.0}]}
    assert got_a.started_at == T0 + timedelta(seconds=1)
    with pytest.raises(NotFound):
        await store.get("rpl_" + "0" * 26)


async def test_list_filters_and_pages(state_storage):
    store = state_storage.replay
    records = [record(i) for i in range(10)]
    await store.write_batch(records, [])
    page = await store.list_records(ReplayFilters(), limit=4)
    assert [r.id for r in page.data] == [r.id for r in records[::-1][:4]] and page.has_more
    rest = await store.list_records(ReplayFilters(), limit=10, after=page.last_id)
    assert len(rest.data) == 6 and not rest.has_more
    assert {
        r.decision
        for r in (await store.list_records(ReplayFilters(decision="coding"), limit=20)).data
    } == {"coding"}
    by_model = await store.list_records(ReplayFilters(model="small"), limit=20)
    assert len(by_model.data) == 5
    session = await store.list_records(
        ReplayFilters(session_id="s0"), limit=20, order=SortOrder.ASC
    )
    assert [r.request_id for r in session.data] == ["req_0", "req_3", "req_6", "req_9"]
    window = await store.list_records(
        ReplayFilters(since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=5)), limit=20
    )
    assert {r.request_id for r in window.data} == {"req_3", "req_4"}
    assert all(r.request_body is None for r in page.data)


async def test_abort_in_flight_only_touches_dead_replicas_and_is_idempotent(state_storage):
    store = state_storage.replay
    dead, live = record(1, replica_id="rep_dead"), record(2, replica_id="rep_live")
    done = record(3, replica_id="rep_dead", lifecycle_state=LifecycleState.COMPLETED)
    await store.write_batch([dead, live, done], [])
    assert sorted(await store.replicas_with_records_in_flight()) == ["rep_dead", "rep_live"]
    assert await store.count_in_flight(["rep_dead"]) == 1
    assert await store.abort_in_flight(["rep_dead"]) == 1
    assert await store.abort_in_flight(["rep_dead"]) == 0
    aborted = await store.get(dead.id)
    assert aborted.lifecycle_state is LifecycleState.ABORTED
    assert aborted.terminal_reason is TerminalReason.PROCESS_RESTART
    assert (await store.get(live.id)).lifecycle_state is LifecycleState.IN_PROGRESS
    assert (await store.get(done.id)).lifecycle_state is LifecycleState.COMPLETED


async def test_recorder_coalesces_and_flushes_on_stop(state_storage):
    recorder = ReplayRecorder(
        state_storage.replay, enabled=True, queue_max=100, flush_interval_ms=50
    )
    r = record(1)
    recorder.start(r)
    recorder.finish(r.id, lifecycle_state=LifecycleState.COMPLETED, total_ms=12.5)
    assert recorder.queued == 1
    assert await recorder.flush() == 1
    stored = await state_storage.replay.get(r.id)
    assert stored.lifecycle_state is LifecycleState.COMPLETED and stored.total_ms == 12.5
    later = record(2)
    recorder.start(later)
    await recorder.flush()
    recorder.finish(
        later.id,
        lifecycle_state=LifecycleState.ABORTED,
        terminal_reason=TerminalReason.CLIENT_CANCELED,
    )
    await recorder.stop()  # the final flush applies the pending update
    assert (
        await state_storage.replay.get(later.id)
    ).terminal_reason is TerminalReason.CLIENT_CANCELED
    assert recorder.written == 3
    assert recorder.dropped == {"queue_full": 0, "db_unavailable": 0, "value_refused": 0}


async def test_recorder_drops_and_counts_instead_of_blocking(state_storage):
    recorder = ReplayRecorder(state_storage.replay, enabled=True, queue_max=3, flush_interval_ms=50)
    for i in range(5):
        recorder.start(record(i))
    assert recorder.queued == 3 and recorder.dropped["queue_full"] == 2
    await state_storage.replay.db.close()  # the database goes away
    assert await recorder.flush() == 0
    # kept, not dropped: written once the database is back, without a restart
    assert recorder.dropped["db_unavailable"] == 0 and recorder.queued == 3
    assert recorder.degraded is not None
    await state_storage.replay.db.open()
    assert await recorder.flush() == 3
    assert recorder.degraded is None and recorder.queued == 0


async def test_disabled_recorder_records_nothing(state_storage):
    recorder = ReplayRecorder(
        state_storage.replay, enabled=False, queue_max=3, flush_interval_ms=50
    )
    recorder.start(record(1))
    assert recorder.queued == 0 and await recorder.flush() == 0


async def _prune(store, *, older_than, keep, batch_size=1000):
    policy = RetentionPolicy(max_age=timedelta(0), max_count=keep)
    return await store.prune("router_replay", policy, batch_size=batch_size, now=older_than)


async def test_retention_by_age_and_count_in_batches(state_storage):
    store = state_storage.replay
    records = [record(i) for i in range(30)]  # started T0 + i seconds
    await store.write_batch(records, [])
    # age: everything started before T0+5s goes
    assert await _prune(store, older_than=T0 + timedelta(seconds=5), keep=1000) == 5
    # count: keep the newest 20 of the remaining 25, two records per batch
    removed = []
    while n := await _prune(store, older_than=T0, keep=20, batch_size=2):
        removed.append(n)
    assert sum(removed) == 5 and max(removed) == 2
    left = await store.list_records(ReplayFilters(), limit=100)
    assert [r.id for r in left.data] == [r.id for r in records[::-1][:20]]


async def test_aggregate_counts_sums_and_percentiles_agree_with_numpy(state_storage):
    """The same data on SQLite (ORDER BY ... OFFSET) and PostgreSQL (percentile_cont) must give
    numpy's linear percentiles."""
    import numpy as np

    store = state_storage.replay
    latencies = [float(x) for x in np.random.default_rng(7).gamma(2.0, 50.0, size=257).round(3)]
    records = [
        record(
            i,
            total_ms=latencies[i],
            prompt_tokens=i,
            completion_tokens=2,
            total_tokens=i + 2,
            cost=0.001,
            lifecycle_state=LifecycleState.COMPLETED if i % 5 else LifecycleState.FAILED,
        )
        for i in range(257)
    ]
    records.append(record(999))  # in flight: no latency yet
    await store.write_batch(records, [])
    agg = await store.aggregate(ReplayFilters())
    assert agg["count"] == 258
    assert agg["by_decision"] == {"coding": 129, "default": 129}
    assert agg["by_model"] == {"large": 129, "small": 129}
    assert agg["by_lifecycle_state"] == {"completed": 205, "failed": 52, "in_progress": 1}
    assert agg["tokens"] == {
        "prompt": sum(range(257)),
        "completion": 514,
        "total": sum(range(257)) + 514,
    }
    assert agg["cost"] == pytest.approx(0.257)
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert agg["latency_ms"][name] == pytest.approx(
            float(np.percentile(latencies, p)), abs=0.002
        )
    coding = await store.aggregate(ReplayFilters(decision="coding"))
    assert coding["count"] == 129 and set(coding["by_decision"]) == {"coding"}
    empty = await store.aggregate(ReplayFilters(session_id="nobody"))
    assert empty["count"] == 0 and empty["latency_ms"] == {"p50": None, "p95": None, "p99": None}


async def test_stop_during_a_flush_loses_nothing(state_storage):
    """Found by bench/replay_ingest.py: stopping used to cancel the writer mid-batch."""
    import asyncio

    from routekeeper.storage.schema.replay import router_replay

    recorder = ReplayRecorder(
        state_storage.replay, enabled=True, queue_max=10_000, flush_interval_ms=5
    )
    recorder.begin()
    for i in range(3000):
        recorder.start(record(i))
        if i % 250 == 0:
            await asyncio.sleep(0.001)  # let the writer pick up batches meanwhile
    await recorder.stop()
    assert await state_storage.replay.db.count_rows(router_replay) == 3000


async def test_a_cancelled_flush_puts_its_batch_back(state_storage):
    import asyncio

    from routekeeper.storage.schema.replay import router_replay

    recorder = ReplayRecorder(
        state_storage.replay, enabled=True, queue_max=10_000, flush_interval_ms=5
    )
    first = [record(i) for i in range(2000)]
    for r in first:
        recorder.start(r)
    flushing = asyncio.ensure_future(recorder.flush())
    await asyncio.sleep(0)  # the batch is taken, the write has begun
    recorder.finish(first[0].id, lifecycle_state=LifecycleState.COMPLETED)  # arrives meanwhile
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert recorder.queued == 2000
    await recorder.flush()
    assert await state_storage.replay.db.count_rows(router_replay) == 2000
    assert (await state_storage.replay.get(first[0].id)).lifecycle_state is LifecycleState.COMPLETED


async def test_full_text_search_over_captured_prompts(state_storage):
    store = state_storage.replay
    a = record(1, prompt_text="My Python script raises a KeyError in the stack trace")
    b = record(2, prompt_text="how do I bake sourdough bread")
    c = record(3)  # nothing captured: never found
    await store.write_batch([a, b, c], [])

    async def found(q):
        page = await store.list_records(ReplayFilters(q=q), limit=20)
        return {r.request_id for r in page.data}

    assert await found("python") == {"req_1"}
    assert await found("stack trace") == {"req_1"}
    assert await found("bread python") == set()  # every word must be there
    assert await found('bread* "sourdough" (') == {"req_2"}  # syntax is ignored, words kept
    assert await found("bread OR python") == set()  # OR is a word here, not an operator
    assert await found("nothing") == set()
    await store.write_batch([], [(b.id, {"prompt_text": "now about python too"})])
    assert await found("python") == {"req_1", "req_2"}
    assert await found("sourdough") == set()
    assert await _prune(store, older_than=T0 + timedelta(seconds=2), keep=1000) == 1  # a goes
    assert await found("python") == {"req_2"}
    assert (await store.aggregate(ReplayFilters(q="python")))["count"] == 1
    with pytest.raises(Exception, match="at least one word"):
        await store.list_records(ReplayFilters(q="!!!"), limit=5)
