"""The replay writer under a flood of records, on real databases: a backlog is written in
transactions of at most FLUSH_BATCH records, nothing is dropped while the queue has room, and
on SQLite a batch is a few multi-row statements whatever its size (a statement step per row
made the writer fall behind a busy event loop: see ``storage/replay_writes.py``)."""

import asyncio
from itertools import count

import pytest
from sqlalchemy import event

from routekeeper.contract.ids import new_id
from routekeeper.contract.replay import LifecycleState, ReplayFilters, TerminalReason
from routekeeper.router.services.replay import FLUSH_BATCH, ReplayRecorder
from routekeeper.storage.replay_writes import MAX_CHUNK_ROWS, chunk_sizes
from routekeeper.storage.schema.replay import router_replay
from routekeeper.storage.sqlite_writer import SETTLE_ROUNDS
from routekeeper.storage.types import utcnow
from test_replay_store import record

DONE = {
    "lifecycle_state": LifecycleState.COMPLETED,
    "terminal_reason": TerminalReason.RESPONSE_COMPLETE,
}


def watch_batches(store) -> list[int]:
    """The size (inserts + updates) of every batch the store is asked to write."""
    sizes: list[int] = []
    write_batch = store.write_batch

    async def counted(inserts, updates, **kw):
        sizes.append(len(inserts) + len(updates))
        return await write_batch(inserts, updates, **kw)

    store.write_batch = counted
    return sizes


async def test_a_flood_is_written_whole_in_bounded_batches(any_state_storage):
    """Bursts of starts with no chance for the writer to run in between, finishes arriving
    while earlier batches are written: every record ends up stored, completed, and no
    transaction carries more than FLUSH_BATCH records."""
    store = any_state_storage.replay
    sizes = watch_batches(store)
    recorder = ReplayRecorder(
        store, enabled=True, queue_max=20 * FLUSH_BATCH, flush_interval_ms=20, durability="batch"
    )
    recorder.begin()
    ids = count()
    started: list[str] = []
    try:
        for burst in (3 * FLUSH_BATCH + 7, FLUSH_BATCH - 1, 2 * FLUSH_BATCH + 1):
            for _ in range(burst):  # no await: the writer cannot run during a burst
                r = record(next(ids))
                assert recorder.start(r)
                started.append(r.id)
            for record_id in started[-burst:][::2]:
                recorder.finish(record_id, **DONE, total_ms=1.0)
            await asyncio.sleep(0.05)  # the writer runs between bursts
            for record_id in started[-burst:][1::2]:
                recorder.finish(record_id, **DONE, total_ms=2.0)
    finally:
        await recorder.stop()

    assert recorder.dropped == {"queue_full": 0, "db_unavailable": 0, "value_refused": 0}
    assert recorder.queued == 0
    assert sizes and max(sizes) <= FLUSH_BATCH, sizes
    # a start and its finish written apart are two writes: at least one per record
    assert recorder.written == sum(sizes) >= len(started)
    assert recorder.batches == len(sizes)
    stored = await any_state_storage.database_for("router_replay").count_rows(router_replay)
    assert stored == len(started)
    page = await store.list_records(ReplayFilters(lifecycle_state=LifecycleState.IN_PROGRESS))
    assert page.data == []


@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=True)
async def test_a_sqlite_batch_is_a_few_statements_whatever_its_size(state_storage):
    """FLUSH_BATCH inserts and as many updates, each with its own values, run a handful of
    statements (an executemany counts once per row: SQLite steps it row by row)."""
    store = state_storage.replay
    db = state_storage.database_for("router_replay")
    records = [record(i, session_id=f"s{i}", signals={"n": i}) for i in range(FLUSH_BATCH)]
    runs: list[int] = []

    def executed(conn, cursor, statement, parameters, context, executemany):
        runs.append(len(parameters) if executemany else 1)

    engines = db.engines()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", executed)
    try:
        assert await store.write_batch(records, []) == set()
        inserted = sum(runs)
        gone = new_id("rpl")
        finished_at = utcnow()
        updates = [
            (r.id, {**DONE, "total_ms": float(i), "completed_at": finished_at})
            for i, r in enumerate(records)
        ]
        runs.clear()
        updates.append((gone, {**DONE, "total_ms": 0.0, "completed_at": finished_at}))
        assert await store.write_batch([], updates) == {gone}
        updated = sum(runs)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", executed)

    assert inserted == len(list(chunk_sizes(FLUSH_BATCH, MAX_CHUNK_ROWS))), inserted
    # + which records exist: a count, and the ids since one is missing
    assert updated == len(list(chunk_sizes(FLUSH_BATCH + 1, MAX_CHUNK_ROWS))) + 2, updated
    for i in (0, 1, FLUSH_BATCH // 2, FLUSH_BATCH - 1):
        got = await store.get(records[i].id)
        assert got.lifecycle_state is LifecycleState.COMPLETED
        assert got.total_ms == float(i) and got.completed_at == finished_at
        assert got.session_id == f"s{i}" and got.signals == {"n": i}
        assert got.started_at == records[i].started_at


@pytest.mark.parametrize("rows", [0, 1, 5, 64, 127, 128, 129, 500, 1000])
def test_chunk_sizes_cover_the_rows_in_powers_of_two(rows):
    sizes = list(chunk_sizes(rows, MAX_CHUNK_ROWS))
    assert sum(sizes) == rows
    assert all(s <= MAX_CHUNK_ROWS and s & (s - 1) == 0 for s in sizes)
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=True)
async def test_a_write_marked_settle_false_starts_without_the_post_commit_wait(state_storage):
    """After a commit the SQLite writer waits up to SETTLE_ROUNDS loop rounds for other
    writers to join the next transaction; a backlog batch (``settle=False``) is taken at once.
    Counted in loop rounds spent in the writer's queue (all on the loop's thread), not in
    time."""
    writer = state_storage.database_for("router_replay")._sqlite_writer
    queued_rounds = 0
    ticking = True

    async def tick():
        nonlocal queued_rounds
        while ticking:
            queued_rounds += bool(writer._queue)
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    waited: dict[bool, int] = {}
    try:
        for settle in (True, False):
            await writer.run(lambda conn: None)
            queued_rounds = 0
            await writer.run(lambda conn: None, settle=settle)
            waited[settle] = queued_rounds
    finally:
        ticking = False
        await ticker
    assert waited[True] >= SETTLE_ROUNDS // 2, waited
    assert waited[False] <= 1, waited
