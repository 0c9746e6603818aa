"""The responses store on SQLite and PostgreSQL: chains read in one statement, a missing link
named, recovery of what a dead replica left in progress, items deleted with their response."""

import asyncio
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import event

from routekeeper.contract.errors import (
    InvalidTransition,
    InvalidValue,
    NotFound,
    StorageError,
)
from routekeeper.contract.ids import new_id
from routekeeper.contract.responses import (
    RESTART_ERROR,
    ItemKind,
    ResponseItemRecord,
    ResponseRecord,
    ResponseStatus,
)
from routekeeper.runtime.retention import apply_retention
from routekeeper.storage.recovery import RecoveryContext
from routekeeper.storage.responses_store import DEFERRED_START_SECONDS, ResponsesStore
from routekeeper.storage.schema.responses import response_items
from routekeeper.storage.types import utcnow

LONG_AGO = utcnow() - timedelta(days=365)


def _response(previous=None, replica="rep_dead", **changes):
    return ResponseRecord(
        id=new_id("resp"),
        replica_id=replica,
        status=ResponseStatus.IN_PROGRESS,
        model="m",
        created_at=changes.pop("created_at", utcnow()),
        request={"metadata": {}},
        previous_response_id=previous,
        **changes,
    )


def _items(response_id, texts, kind=ItemKind.INPUT, start=0):
    ids = sorted(new_id("msg") for _ in texts)
    return [
        ResponseItemRecord(
            id=item_id,
            response_id=response_id,
            position=start + k,
            kind=kind,
            data={"id": item_id, "role": "user", "content": [{"type": "input_text", "text": t}]},
        )
        for k, (item_id, t) in enumerate(zip(ids, texts, strict=True))
    ]


async def _turn(store, text, previous=None):
    record = _response(previous)
    await store.start(record, _items(record.id, [text]))
    await store.finish(
        record.id, ResponseStatus.COMPLETED, _items(record.id, [f"re {text}"], ItemKind.OUTPUT, 1)
    )
    return record.id


def _texts(items):
    return [i.data["content"][0]["text"] for i in items]


async def test_the_context_is_every_turn_in_order(state_storage):
    store = state_storage.store(ResponsesStore)
    a = await _turn(store, "a")
    b = await _turn(store, "b", a)
    c = await _turn(store, "c", b)
    await _turn(store, "other", a)  # a branch: not in c's context
    context = await store.context(c, tenant_id="default", not_before=LONG_AGO)
    assert _texts(context) == ["a", "re a", "b", "re b", "c", "re c"]
    with pytest.raises(NotFound):
        await store.context(c, tenant_id="someone-else", not_before=LONG_AGO)


async def test_a_missing_link_is_named(state_storage):
    store = state_storage.store(ResponsesStore)
    a = await _turn(store, "a")
    b = await _turn(store, "b", a)
    c = await _turn(store, "c", b)
    await store.delete(a, tenant_id="default", not_before=LONG_AGO)
    with pytest.raises(NotFound, match=a):
        await store.context(c, tenant_id="default", not_before=LONG_AGO)
    with pytest.raises(NotFound):
        await store.get(a, tenant_id="default", not_before=LONG_AGO)
    assert await store.db.count_rows(response_items) == 4  # a's two items went with it


async def test_recovery_fails_what_a_dead_replica_left_in_progress(state_storage):
    store = state_storage.store(ResponsesStore)
    dead = _response(replica="rep_dead")
    alive = _response(replica="rep_alive")
    for record in (dead, alive):
        await store.start(record, _items(record.id, ["x"]))
    ctx = RecoveryContext(state_storage, "rep_alive", stale_after_seconds=10)
    dry = await store.recover(ctx, True)
    assert dry.counts == {"failed": 1} and dry.dry_run
    report = await store.recover(ctx, False)
    assert report.counts == {"failed": 1}
    failed, items = await store.get(dead.id, tenant_id="default", not_before=LONG_AGO)
    assert failed.status is ResponseStatus.FAILED and failed.error == RESTART_ERROR
    assert _texts(items) == ["x"]
    kept, _ = await store.get(alive.id, tenant_id="default", not_before=LONG_AGO)
    assert kept.status is ResponseStatus.IN_PROGRESS
    assert (await store.recover(ctx, False)).counts == {"failed": 0}
    with pytest.raises(InvalidTransition):
        await store.finish(dead.id, ResponseStatus.COMPLETED, [])


async def test_retention_deletes_old_responses_with_their_items(state_storage, state_settings):
    store = state_storage.store(ResponsesStore)
    old = _response(created_at=utcnow() - timedelta(days=31))
    await store.start(old, _items(old.id, ["old", "older"]))
    recent = await _turn(store, "new")
    removed = await apply_retention(state_storage, state_settings)
    assert removed["responses"] == 1
    assert await store.db.count_rows(response_items) == 2
    await store.get(recent, tenant_id="default", not_before=LONG_AGO)


async def test_concurrent_writes_share_commits_and_a_refused_one_fails_alone(state_storage):
    store = state_storage.store(ResponsesStore)
    records = [_response() for _ in range(20)]
    # Another replica's response under the same id: refused, alone.
    clash = replace(records[3], replica_id="rep_other")
    results = await asyncio.gather(
        *(store.start(r, _items(r.id, [str(i)])) for i, r in enumerate(records)),
        store.start(clash, []),
        return_exceptions=True,
    )
    assert [type(r) for r in results[:20]] == [type(None)] * 20
    assert isinstance(results[20], StorageError)
    finished = await asyncio.gather(
        *(store.finish(r.id, ResponseStatus.COMPLETED, []) for r in records),
        store.finish(new_id("resp"), ResponseStatus.COMPLETED, []),  # unknown: alone
        return_exceptions=True,
    )
    assert all(r.status is ResponseStatus.COMPLETED for r in finished[:20])
    assert isinstance(finished[20], NotFound)
    for record in records:
        got, items = await store.get(record.id, tenant_id="default", not_before=LONG_AGO)
        assert got.status is ResponseStatus.COMPLETED and len(items) == 1


async def test_values_a_column_refuses_fail_their_own_write_in_a_shared_insert(state_storage):
    """The inserts of a flush go out together; a value a column type refuses (too long, a
    lone surrogate) fails its own start only, and the others' text comes back exactly."""
    store = state_storage.store(ResponsesStore)
    texts = [f"nul \x00 esc \x10 astral \U0001f600 {i}" for i in range(12)]
    records = [_response() for _ in texts]
    too_long = replace(_response(), model="m" * 300)
    surrogate = replace(_response(), model="m\ud800")
    results = await asyncio.gather(
        *(store.start(r, _items(r.id, [t])) for r, t in zip(records, texts, strict=True)),
        store.start(too_long, []),
        store.start(surrogate, _items(surrogate.id, ["x"])),
        return_exceptions=True,
    )
    assert results[:12] == [None] * 12
    assert isinstance(results[12], InvalidValue) and isinstance(results[13], InvalidValue)
    for record, text in zip(records, texts, strict=True):
        _, items = await store.get(record.id, tenant_id="default", not_before=LONG_AGO)
        assert _texts(items) == [text]
    for refused in (too_long, surrogate):
        with pytest.raises(NotFound):
            await store.get(refused.id, tenant_id="default", not_before=LONG_AGO)


async def test_a_finish_that_overtakes_its_queued_start_is_one_write_of_the_final_response(
    state_storage,
):
    store = state_storage.store(ResponsesStore)
    record = _response()
    start = asyncio.ensure_future(store.start(record, _items(record.id, ["in"])))
    await asyncio.sleep(0)  # queued, not yet flushed
    finished = await store.finish(
        record.id, ResponseStatus.INCOMPLETE, _items(record.id, ["out"], ItemKind.OUTPUT, 1)
    )
    await start
    assert finished.status is ResponseStatus.INCOMPLETE and finished.completed_at is not None
    got, items = await store.get(record.id, tenant_id="default", not_before=LONG_AGO)
    assert got == finished and _texts(items) == ["in", "out"]
    with pytest.raises(InvalidTransition):
        await store.finish(record.id, ResponseStatus.COMPLETED, [])


async def test_a_deferred_start_becomes_one_insert_with_its_finish(state_storage):
    store = state_storage.store(ResponsesStore)
    db = store.db
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        written = re.search(r"\bresponse(s|_items)\b", statement)
        if written and not statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    record = _response()
    engines = db.engines()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        start = asyncio.ensure_future(store.start(record, _items(record.id, ["in"]), deferred=True))
        await asyncio.sleep(DEFERRED_START_SECONDS / 4)  # deferred: not written yet
        assert statements == []
        finished = await store.finish(
            record.id, ResponseStatus.COMPLETED, _items(record.id, ["out"], ItemKind.OUTPUT, 1)
        )
        await start
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
    # One insert of the final response (and one of its items); no update.
    assert len(statements) == 2 and not any("UPDATE" in s.upper() for s in statements)
    got, items = await store.get(record.id, tenant_id="default", not_before=LONG_AGO)
    assert got == finished and got.status is ResponseStatus.COMPLETED
    assert _texts(items) == ["in", "out"]


async def test_a_deferred_start_with_no_finish_is_written_in_progress(state_storage):
    store = state_storage.store(ResponsesStore)
    record = _response()
    async with asyncio.timeout(DEFERRED_START_SECONDS * 50):
        await store.start(record, _items(record.id, ["in"]), deferred=True)
    got, items = await store.get(record.id, tenant_id="default", not_before=LONG_AGO)
    assert got.status is ResponseStatus.IN_PROGRESS and _texts(items) == ["in"]


async def test_an_insert_already_carried_by_a_failed_looking_commit_is_stored(state_storage):
    """A shared commit whose answer was lost may have stored its writes: retried alone, a start
    whose response is already there (this replica's) is reported stored, not failed."""
    store = state_storage.store(ResponsesStore)
    record = _response(replica="rep_me")
    await store.start(record, _items(record.id, ["x"]))
    # The same start again, as the retry after an ambiguous commit would run it.
    assert await store.start(record, _items(record.id, ["x"])) is None
    stored, items = await store.get(record.id, tenant_id="default", not_before=LONG_AGO)
    assert stored.status is ResponseStatus.IN_PROGRESS and _texts(items) == ["x"]


async def test_a_cancelled_flush_fails_its_waiters_instead_of_leaving_them_waiting(state_storage):
    store = state_storage.store(ResponsesStore)
    records = [_response() for _ in range(3)]
    starts = [asyncio.ensure_future(store.start(r, _items(r.id, ["x"]))) for r in records]
    await asyncio.sleep(0)  # queued; the flush task exists and has not begun
    assert store._flusher is not None
    store._flusher.cancel()
    results = await asyncio.wait_for(asyncio.gather(*starts, return_exceptions=True), 10)
    assert all(isinstance(r, StorageError) for r in results), results
    # The store still works afterwards.
    assert await _turn(store, "after")
