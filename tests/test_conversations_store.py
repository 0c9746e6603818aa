"""The conversations store on SQLite and PostgreSQL: appends from two replicas at once stay
contiguous (the row lock and the counter), a turn is appended in its response's finish
(merged start and finish too), a conversation deleted mid-turn is not recreated, and deleting
a conversation deletes its items."""

import asyncio

from routekeeper.contract.conversations import ConversationRecord
from routekeeper.contract.ids import new_id
from routekeeper.contract.responses import (
    ItemKind,
    ResponseItemRecord,
    ResponseRecord,
    ResponseStatus,
)
from routekeeper.storage.conversations_store import ConversationsStore
from routekeeper.storage.responses_store import ResponsesStore
from routekeeper.storage.state import StateStorage
from routekeeper.storage.types import utcnow


def _message(text, role="user"):
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


async def _conversation(store, texts=()):
    record = ConversationRecord(id=new_id("conv"), created_at=utcnow(), metadata={})
    record, _ = await store.create(record, [_message(t) for t in texts])
    return record


def _item(response_id, position, kind, text):
    data = _message(text, "user" if kind is ItemKind.INPUT else "assistant")
    return ResponseItemRecord(
        id=data["id"], response_id=response_id, position=position, kind=kind, data=data
    )


async def _turn(responses, conversation_id, tag, *, deferred=False):
    record = ResponseRecord(
        id=new_id("resp"),
        replica_id="rep_x",
        status=ResponseStatus.IN_PROGRESS,
        model="m",
        created_at=utcnow(),
        conversation_id=conversation_id,
    )
    inputs = [
        _item(record.id, 0, ItemKind.INPUT, f"{tag}/0"),
        _item(record.id, 1, ItemKind.INPUT, f"{tag}/1"),
    ]
    await responses.start(record, inputs, deferred=deferred)
    output = [_item(record.id, 2, ItemKind.OUTPUT, f"{tag}/2")]
    return await responses.finish(
        record.id, ResponseStatus.COMPLETED, output, conversation_id=conversation_id
    )


def _texts(history):
    return [i.data["content"][0]["text"] for i in history]


async def test_appends_from_two_replicas_at_once_stay_contiguous(state_settings, state_storage):
    other = StateStorage(state_settings)  # a second replica on the same database
    await other.open()
    try:
        stores = [state_storage.store(ConversationsStore), other.store(ConversationsStore)]
        responses = [state_storage.store(ResponsesStore), other.store(ResponsesStore)]
        conversation = await _conversation(stores[0], ["start"])

        async def add(n):
            tag = f"add{n}"
            items = [_message(f"{tag}/{k}") for k in range(3)]
            await stores[n % 2].add_items(conversation.id, items, tenant_id="default")

        await asyncio.gather(
            *(add(n) for n in range(16)),
            *(_turn(responses[n % 2], conversation.id, f"turn{n}") for n in range(16)),
        )
        history = await stores[1].history(conversation.id, tenant_id="default")
    finally:
        await other.close()
    assert [i.position for i in history] == list(range(1 + 32 * 3))
    texts = _texts(history)
    assert texts[0] == "start"
    groups = [texts[k : k + 3] for k in range(1, len(texts), 3)]
    for group in groups:
        tag = group[0].split("/")[0]
        assert group == [f"{tag}/0", f"{tag}/1", f"{tag}/2"], texts
    tags = sorted(g[0].split("/")[0] for g in groups)
    assert tags == sorted([f"add{n}" for n in range(16)] + [f"turn{n}" for n in range(16)])
    stored = await stores[0].get(conversation.id, tenant_id="default")
    assert stored.next_position == len(history)


async def test_a_merged_start_and_finish_appends_the_turn(state_storage):
    store = state_storage.store(ConversationsStore)
    responses = state_storage.store(ResponsesStore)
    conversation = await _conversation(store, ["start"])
    # A plain request's start waits for its finish: both become one insert, with the append.
    turn = await _turn(responses, conversation.id, "fast", deferred=True)
    history = await store.history(conversation.id, tenant_id="default")
    assert _texts(history) == ["start", "fast/0", "fast/1", "fast/2"]
    assert [i.response_id for i in history] == [None, turn.id, turn.id, turn.id]


async def test_a_conversation_deleted_mid_turn_is_not_recreated(state_storage):
    store = state_storage.store(ConversationsStore)
    responses = state_storage.store(ResponsesStore)
    conversation = await _conversation(store, ["start"])
    record = ResponseRecord(
        id=new_id("resp"),
        replica_id="rep_x",
        status=ResponseStatus.IN_PROGRESS,
        model="m",
        created_at=utcnow(),
        conversation_id=conversation.id,
    )
    await responses.start(record, [_item(record.id, 0, ItemKind.INPUT, "x")])
    await store.delete(conversation.id, tenant_id="default")
    finished = await responses.finish(
        record.id,
        ResponseStatus.COMPLETED,
        [_item(record.id, 1, ItemKind.OUTPUT, "y")],
        conversation_id=conversation.id,
    )
    assert finished.status is ResponseStatus.COMPLETED
    assert await store.count_rows("conversations") == 0
    assert await store.count_rows("conversation_items") == 0


async def test_deleting_a_conversation_deletes_its_items(state_storage):
    store = state_storage.store(ConversationsStore)
    kept = await _conversation(store, ["a", "b"])
    doomed = await _conversation(store, ["c", "d", "e"])
    assert await store.count_rows("conversation_items") == 5
    await store.delete(doomed.id, tenant_id="default")
    assert await store.count_rows("conversation_items") == 2
    assert _texts(await store.history(kept.id, tenant_id="default")) == ["a", "b"]
