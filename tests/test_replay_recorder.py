"""The replay recorder against real databases: refused values isolated from their batch,
finishes kept through an outage, acknowledged (group-committed) finishes, ack timeouts."""

import asyncio
import sqlite3
from datetime import timedelta

import pytest

from routekeeper.contract.errors import NotFound
from routekeeper.contract.replay import LifecycleState, TerminalReason
from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.storage.surface_store import RetentionPolicy
from test_replay_store import record

DONE = {
    "lifecycle_state": LifecycleState.COMPLETED,
    "terminal_reason": TerminalReason.RESPONSE_COMPLETE,
}


def recorder_for(storage, **kw) -> ReplayRecorder:
    kw = {"enabled": True, "queue_max": 1000, "flush_interval_ms": 20, **kw}
    return ReplayRecorder(storage.replay, **kw)


async def test_one_refused_value_does_not_take_its_batch_down(state_storage):
    """A session id longer than its column and a token count beyond a 4-byte integer used
    to fail every record of the flush (PostgreSQL) or lose the batch uncounted (SQLite)."""
    recorder = recorder_for(state_storage, durability="batch")
    good = [record(i) for i in range(10)]
    long_session = record(10, session_id="s" * 300)
    stored_first = record(11)
    for r in [*good, long_session, stored_first]:
        recorder.start(r)
    assert await recorder.flush() == 11
    # the finish of a stored record carries a count no column holds, next to good finishes
    for r in good[:5]:
        recorder.finish(r.id, **DONE, total_tokens=12)
    recorder.finish(stored_first.id, **DONE, total_ms=3.5, total_tokens=2**64)
    assert await recorder.flush() == 6
    assert recorder.dropped["value_refused"] == 2
    for r in good[:5]:
        got = await state_storage.replay.get(r.id)
        assert got.lifecycle_state is LifecycleState.COMPLETED and got.total_tokens == 12
    for r in good[5:]:
        assert (await state_storage.replay.get(r.id)).lifecycle_state is LifecycleState.IN_PROGRESS
    with pytest.raises(NotFound):
        await state_storage.replay.get(long_session.id)
    # the refused finish still says how the request ended, never in_progress
    first = await state_storage.replay.get(stored_first.id)
    assert first.lifecycle_state is LifecycleState.COMPLETED and first.total_ms == 3.5
    assert first.total_tokens is None and "refused" in (first.error or "")


async def test_finishes_are_kept_through_an_outage(state_storage):
    """A finish that could not be written used to be dropped, leaving the record
    in_progress; it is kept and written when the database is back."""
    recorder = recorder_for(state_storage, durability="batch")
    records = [record(i) for i in range(4)]
    for r in records:
        recorder.start(r)
    await recorder.flush()
    await state_storage.replay.db.close()
    for r in records:
        recorder.finish(r.id, **DONE)
    newcomer = record(9)
    recorder.start(newcomer)
    recorder.finish(newcomer.id, **DONE)
    for _ in range(3):
        assert await recorder.flush() == 0
    assert recorder.queued == 5 and sum(recorder.dropped.values()) == 0
    await state_storage.replay.db.open()
    assert await recorder.flush() == 5
    for r in [*records, newcomer]:
        assert (await state_storage.replay.get(r.id)).lifecycle_state is LifecycleState.COMPLETED


async def test_an_outage_beyond_queue_max_drops_new_records_first(state_storage):
    recorder = recorder_for(state_storage, durability="batch", queue_max=10)
    stored = [record(i) for i in range(8)]
    for r in stored:
        recorder.start(r)
    await recorder.flush()
    await state_storage.replay.db.close()
    for r in stored:
        recorder.finish(r.id, **DONE)
    fresh = [record(100 + i) for i in range(6)]
    accepted = [r for r in fresh if recorder.start(r)]
    assert len(accepted) == 2 and recorder.dropped["queue_full"] == 4
    await recorder.flush()
    for r in fresh:
        recorder.start(r)  # the map is full of kept work: refused and counted
    assert recorder.queued == 10
    await state_storage.replay.db.open()
    await recorder.flush()
    for r in stored:  # every finish of a stored record survived
        assert (await state_storage.replay.get(r.id)).lifecycle_state is LifecycleState.COMPLETED


async def test_acknowledged_finishes_resolve_after_commit_in_shared_transactions(state_storage):
    # The timer never fires; the answer waits for the commit however slow the machine is (the
    # deadline is not what this test is about: a commit slower than the default 500 ms on a
    # loaded machine once made every finish an ack timeout here).
    recorder = recorder_for(state_storage, flush_interval_ms=10_000, ack_timeout_ms=60_000)
    recorder.begin()
    try:
        records = [record(i) for i in range(64)]
        for r in records:
            recorder.start(r)

        async def finish_and_wait(r) -> bool:
            await asyncio.sleep(0)
            return await recorder.acknowledge(recorder.finish(r.id, **DONE))

        results = await asyncio.gather(*(finish_and_wait(r) for r in records))
        assert all(results) and recorder.ack_timeouts == 0
        # committed before the futures resolved: readable at once
        for r in records:
            assert (
                await state_storage.replay.get(r.id)
            ).lifecycle_state is LifecycleState.COMPLETED
        assert recorder.batches < len(records)  # group commit, not one transaction each
    finally:
        await recorder.stop()


async def test_batch_mode_and_a_known_outage_answer_without_waiting(state_storage):
    batch = recorder_for(state_storage, durability="batch")
    r = record(1)
    batch.start(r)
    done = batch.finish(r.id, **DONE)
    assert done.done() and done.result() is False
    assert await batch.acknowledge(done) is False and batch.ack_timeouts == 0

    acked = recorder_for(state_storage)
    other = record(2)
    acked.start(other)
    await state_storage.replay.db.close()
    await acked.flush()
    assert acked.degraded is not None and not acked.will_acknowledge(other.id)
    done = acked.finish(other.id, **DONE)
    assert done.done() and await acked.acknowledge(done) is False
    assert acked.ack_timeouts == 1
    await state_storage.replay.db.open()
    await acked.flush()  # still written afterwards
    assert (await state_storage.replay.get(other.id)).lifecycle_state is LifecycleState.COMPLETED


@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=True)
async def test_a_commit_slower_than_ack_timeout_is_answered_and_counted(state_storage):
    """Another process holds SQLite's write lock: the acknowledgement times out after
    ack_timeout_ms, the request is answered (not durable), and the record is written once
    the lock is gone."""
    recorder = recorder_for(state_storage, ack_timeout_ms=200)
    recorder.begin()
    blocker = sqlite3.connect(state_storage.replay.db.sqlite_path, isolation_level=None)
    try:
        r = record(1)
        recorder.start(r)
        blocker.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        began = loop.time()
        durable = await recorder.acknowledge(recorder.finish(r.id, **DONE))
        waited = loop.time() - began
        assert durable is False and recorder.ack_timeouts == 1
        assert 0.15 < waited < 2.0
        blocker.execute("ROLLBACK")
        for _ in range(200):
            if recorder.written:
                break
            await asyncio.sleep(0.05)
        assert (await state_storage.replay.get(r.id)).lifecycle_state is LifecycleState.COMPLETED
    finally:
        blocker.close()
        await recorder.stop()


async def test_a_finish_whose_record_was_refused_or_pruned_is_not_acknowledged(state_storage):
    """The finish of a record whose start the database refused (queued while that start was
    being written), or whose row retention removed, used to be acknowledged durable although
    no record existed."""
    recorder = recorder_for(state_storage)
    refused = record(1, session_id="s" * 300)
    recorder.start(refused)
    writing = asyncio.ensure_future(recorder.flush())
    await asyncio.sleep(0)  # the writer has taken the start
    done = recorder.finish(refused.id, **DONE)
    await writing
    assert await recorder.flush() == 0
    assert await recorder.acknowledge(done) is False
    with pytest.raises(NotFound):
        await state_storage.replay.get(refused.id)

    pruned = record(2)
    recorder.start(pruned)
    await recorder.flush()
    removed = await state_storage.replay.prune(
        "router_replay",
        RetentionPolicy(max_age=timedelta(days=1)),
        now=pruned.started_at.replace(year=2100),
    )
    assert removed == 1
    done = recorder.finish(pruned.id, **DONE)
    await recorder.flush()
    assert done.result() is False


async def test_a_record_postgres_full_text_cannot_index_never_stalls_the_writer(state_storage):
    """A prompt beyond what PostgreSQL's tsvector holds (1 MB) was retried forever as if the
    database were down, so nothing else was stored again."""
    recorder = recorder_for(state_storage, durability="batch")
    good = [record(i) for i in range(4)]
    huge = record(9, prompt_text=" ".join(f"w{i}" for i in range(400_000)))  # ~2.8 MB
    for r in [good[0], good[1], huge, good[2], good[3]]:
        recorder.start(r)
    await recorder.flush()
    assert recorder.degraded is None and recorder.queued == 0
    for r in good:
        assert (await state_storage.replay.get(r.id)).id == r.id
    expected = 1 if state_storage.replay.db.dialect.postgres else 0
    assert recorder.dropped["value_refused"] == expected


async def test_stop_counts_what_an_unreachable_database_kept_until_the_deadline(state_storage):
    """A deadline on stop() used to cancel the writer mid-batch and skip the loss count."""
    recorder = recorder_for(state_storage)
    recorder.begin()
    records = [record(i) for i in range(5)]
    for r in records:
        recorder.start(r)
    waiting = [recorder.finish(r.id, **DONE) for r in records]
    await state_storage.replay.db.close()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await recorder.stop()
    assert recorder.dropped["db_unavailable"] == 5 and recorder.queued == 0
    assert all(w.done() and w.result() is False for w in waiting)
    await state_storage.replay.db.open()
