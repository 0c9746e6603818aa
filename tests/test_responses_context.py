"""A turn's context from the replica's memo of finished responses: every use is checked against
the database (a link deleted by another replica, or expired, is still the 404 naming it), a
chain another replica wrote is remembered once read, one still in progress is not, and the
memo stays within its bounds. On SQLite and PostgreSQL."""

import re
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, update

from routekeeper.contract.errors import NotFound
from routekeeper.contract.ids import new_id
from routekeeper.contract.responses import (
    ItemKind,
    ResponseItemRecord,
    ResponseRecord,
    ResponseStatus,
)
from routekeeper.storage.responses_context import ContextMemo, Turn
from routekeeper.storage.responses_store import ResponsesStore
from routekeeper.storage.schema.responses import responses
from routekeeper.storage.types import utcnow

LONG_AGO = utcnow() - timedelta(days=365)


def _response(previous=None):
    return ResponseRecord(
        id=new_id("resp"),
        replica_id="rep_here",
        status=ResponseStatus.IN_PROGRESS,
        model="m",
        created_at=utcnow(),
        previous_response_id=previous,
    )


def _items(response_id, text, kind=ItemKind.INPUT, position=0):
    data = {"role": "user", "content": [{"type": "input_text", "text": text}]}
    return [ResponseItemRecord(new_id("msg"), response_id, position, kind, data)]


async def _turn(store, text, previous=None):
    record = _response(previous)
    await store.start(record, _items(record.id, text))
    output = _items(record.id, f"re {text}", ItemKind.OUTPUT, 1)
    await store.finish(record.id, ResponseStatus.COMPLETED, output)
    return record.id


def _texts(items):
    return [i.data["content"][0]["text"] for i in items]


@contextmanager
def statements(db):
    """The statements on the responses tables while the block runs."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if re.search(r"\bresponse(s|_items)\b", statement):
            seen.append(statement)

    engines = db.engines()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


def _reads_items(seen):
    return any("response_items" in s for s in seen)


async def test_a_remembered_chain_is_read_without_its_items_and_in_order(state_storage):
    store = state_storage.store(ResponsesStore)
    a = await _turn(store, "a")
    b = await _turn(store, "b", a)
    c = await _turn(store, "c", b)
    with statements(store.db) as seen:
        context = await store.context(c, tenant_id="default", not_before=LONG_AGO)
    assert _texts(context) == ["a", "re a", "b", "re b", "c", "re c"]
    assert len(seen) == 1 and not _reads_items(seen)  # the walk alone: the memo had them
    with pytest.raises(NotFound):
        await store.context(c, tenant_id="someone-else", not_before=LONG_AGO)


async def test_a_link_deleted_by_another_replica_is_named(state_storage):
    store = state_storage.store(ResponsesStore)
    other = ResponsesStore(store.db)  # another replica's store on the same database
    a = await _turn(store, "a")
    b = await _turn(store, "b", a)
    c = await _turn(store, "c", b)
    await other.delete(b, tenant_id="default", not_before=LONG_AGO)
    with pytest.raises(NotFound, match=f"'{b}' not found \\(response '{c}' continues it\\)"):
        await store.context(c, tenant_id="default", not_before=LONG_AGO)
    with pytest.raises(NotFound, match=b):  # still, and not from a stale memo
        await store.context(c, tenant_id="default", not_before=LONG_AGO)
    await other.delete(c, tenant_id="default", not_before=LONG_AGO)
    with pytest.raises(NotFound, match=f"'{c}' not found"):
        await store.context(c, tenant_id="default", not_before=LONG_AGO)


async def test_an_expired_link_is_named(state_storage):
    store = state_storage.store(ResponsesStore)
    a = await _turn(store, "a")
    b = await _turn(store, "b", a)
    c = await _turn(store, "c", b)
    async with store.db.write() as conn:
        await conn.execute(
            update(responses)
            .where(responses.c.id.in_([a, b]))
            .values(created_at=utcnow() - timedelta(days=40))
        )
    not_before = utcnow() - timedelta(days=30)
    with pytest.raises(NotFound, match=f"'{b}' not found"):
        await store.context(c, tenant_id="default", not_before=not_before)
    assert len(await store.context(c, tenant_id="default", not_before=LONG_AGO)) == 6


async def test_a_chain_another_replica_wrote_is_remembered_once_read(state_storage):
    writer = state_storage.store(ResponsesStore)
    reader = ResponsesStore(writer.db)
    a = await _turn(writer, "a")
    b = await _turn(writer, "b", a)
    with statements(writer.db) as first:
        assert _texts(await reader.context(b, tenant_id="default", not_before=LONG_AGO)) == [
            "a",
            "re a",
            "b",
            "re b",
        ]
    with statements(writer.db) as second:
        await reader.context(b, tenant_id="default", not_before=LONG_AGO)
    assert _reads_items(first) and len(second) == 1 and not _reads_items(second)


async def test_a_response_in_progress_is_not_remembered(state_storage):
    writer = state_storage.store(ResponsesStore)
    reader = ResponsesStore(writer.db)
    a = await _turn(writer, "a")
    record = _response(a)
    await writer.start(record, _items(record.id, "b"))
    context = await reader.context(record.id, tenant_id="default", not_before=LONG_AGO)
    assert _texts(context) == ["a", "re a", "b"]
    await writer.finish(
        record.id, ResponseStatus.COMPLETED, _items(record.id, "re b", ItemKind.OUTPUT, 1)
    )
    context = await reader.context(record.id, tenant_id="default", not_before=LONG_AGO)
    assert _texts(context) == ["a", "re a", "b", "re b"]  # its output, read after it finished


def _turn_of(response_id, previous=None, size=1):
    items = tuple(
        ResponseItemRecord(new_id("msg"), response_id, k, ItemKind.INPUT, {}) for k in range(size)
    )
    return Turn(response_id, previous, "default", items)


def test_the_memo_keeps_within_its_bounds_and_drops_the_least_used():
    memo = ContextMemo(max_responses=3, max_items=4)
    a, b, c, d = (new_id("resp") for _ in range(4))
    memo.add(_turn_of(a))
    memo.add(_turn_of(b, a))
    memo.add(_turn_of(c))
    assert memo.chain(b, "default") is not None  # used: a and b are now the newest
    memo.add(_turn_of(d, size=2))  # 5 items: c, the least recently used, goes
    assert c not in memo and len(memo) == 3
    assert [t.response_id for t in memo.chain(b, "default")] == [b, a]
    assert memo.chain(b, "someone-else") is None
    memo.forget(a)
    assert memo.chain(b, "default") is None  # a chain with a link missing is not given
    memo.add(_turn_of(new_id("resp"), size=5))  # more items than the memo holds: not kept
    assert len(memo) == 2


async def test_a_chain_is_read_on_every_backend_kind(any_state_storage):
    store = any_state_storage.store(ResponsesStore)
    a = await _turn(store, "a")
    b = await _turn(store, "b", a)
    fresh = ResponsesStore(store.db)  # nothing remembered: the full read
    for reader in (fresh, fresh, store):
        context = await reader.context(b, tenant_id="default", not_before=LONG_AGO)
        assert _texts(context) == ["a", "re a", "b", "re b"]
    texts = await store.context(b, tenant_id="default", not_before=LONG_AGO, convert=_texts)
    assert texts == ["a", "re a", "b", "re b"]  # converted turn by turn
