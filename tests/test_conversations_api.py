"""The Conversations API through the official SDK with strict response validation, on a fresh
SQLite workspace and a fresh PostgreSQL database: conversations and their items, responses
on a conversation (its items come first, the finished turn is appended), concurrent turns,
bad input, and the management list."""

import threading
import time

import openai
import pytest
from fastapi.testclient import TestClient

from routekeeper.server.app import create_app
from routekeeper.settings import load_settings
from routekeeper.testing import FakeUpstream

TRANSCRIPT = {"name": "scribe", "backend": {"type": "echo", "reply": "transcript"}}


def _settings(state_settings, models):
    return load_settings(
        None,
        workspace=state_settings.workspace,
        overrides={
            "state": state_settings.state.model_dump(),
            "models": models,
            "decisions": [{"name": "default", "model": models[0]["name"]}],
        },
    )


def _ready(client):
    deadline = time.monotonic() + 20
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


def _sdk(client):
    return openai.OpenAI(
        base_url="http://testserver/v1",
        api_key="x",
        http_client=client,
        _strict_response_validation=True,
        max_retries=0,
    )


@pytest.fixture
def client(state_settings):
    with TestClient(create_app(_settings(state_settings, [TRANSCRIPT]))) as client:
        _ready(client)
        yield client


@pytest.fixture
def sdk(client):
    return _sdk(client)


def _texts(items):
    return [(i.role, i.content[0].text) for i in items]


def test_create_retrieve_update_delete(sdk):
    created = sdk.conversations.create(
        items=[{"role": "user", "content": "hello"}], metadata={"topic": "demo"}
    )
    assert created.id.startswith("conv_") and created.object == "conversation"
    assert created.metadata == {"topic": "demo"} and created.created_at > 0
    assert sdk.conversations.retrieve(created.id).model_dump() == created.model_dump()
    updated = sdk.conversations.update(created.id, metadata={"topic": "other", "k": "v"})
    assert updated.metadata == {"topic": "other", "k": "v"}
    assert sdk.conversations.retrieve(created.id).metadata == updated.metadata
    empty = sdk.conversations.create()
    assert empty.metadata == {} and list(sdk.conversations.items.list(empty.id)) == []
    deleted = sdk.conversations.delete(created.id)
    assert deleted.id == created.id and deleted.deleted and deleted.object == "conversation.deleted"
    for call in (
        lambda: sdk.conversations.retrieve(created.id),
        lambda: sdk.conversations.delete(created.id),
        lambda: sdk.conversations.update(created.id, metadata={}),
        lambda: sdk.conversations.items.list(created.id),
        lambda: sdk.conversations.items.create(
            created.id, items=[{"role": "user", "content": "x"}]
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()


def test_items_create_page_retrieve_delete(sdk):
    first = [{"role": "user", "content": f"item {i}"} for i in range(20)]
    conversation = sdk.conversations.create(items=first)
    for batch in range(1, 12):
        added = sdk.conversations.items.create(
            conversation.id,
            items=[{"role": "user", "content": f"item {batch * 20 + i}"} for i in range(20)],
        )
        assert added.object == "list" and len(added.data) == 20 and not added.has_more
        assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id
    # The SDK pages with after=last_id until has_more is false.
    ascending = list(sdk.conversations.items.list(conversation.id, order="asc", limit=7))
    assert [i.content[0].text for i in ascending] == [f"item {n}" for n in range(240)]
    descending = list(sdk.conversations.items.list(conversation.id))  # default: desc, 20
    assert [i.id for i in descending] == [i.id for i in reversed(ascending)]
    page = sdk.conversations.items.list(conversation.id, limit=100)
    assert len(page.data) == 100 and page.has_more and page.last_id == page.data[-1].id
    one = ascending[37]
    got = sdk.conversations.items.retrieve(one.id, conversation_id=conversation.id)
    assert got.model_dump() == one.model_dump() and got.type == "message"
    after_delete = sdk.conversations.items.delete(one.id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(one.id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.delete(one.id, conversation_id=conversation.id)
    left = list(sdk.conversations.items.list(conversation.id, order="asc", limit=100))
    assert len(left) == 239 and one.id not in {i.id for i in left}
    # Items of another conversation are not found through this one.
    other = sdk.conversations.create()
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(left[0].id, conversation_id=other.id)


def _echo(*lines):
    return "\n".join(["echo:scribe:", *lines])


def test_a_response_on_a_conversation_sees_its_items_and_is_appended(sdk, client):
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "hello"}])
    first = sdk.responses.create(
        model="scribe", input="one", conversation=conversation.id, instructions="be brief"
    )
    one = _echo("system: be brief", "user: hello", "user: one")
    assert first.output[0].content[0].text == one
    assert first.conversation.id == conversation.id
    assert sdk.responses.retrieve(first.id).model_dump() == first.model_dump()
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert _texts(items) == [("user", "hello"), ("user", "one"), ("assistant", one)]
    assert items[2].id == first.output[0].id
    # The next turn (the object form, streamed) sees every item, in order, then its input.
    with sdk.responses.stream(
        model="scribe", input="two", conversation={"id": conversation.id}
    ) as stream:
        second = stream.get_final_response()
    two = _echo("user: hello", "user: one", f"assistant: {one}", "user: two")
    assert second.output[0].content[0].text == two
    assert second.conversation.id == conversation.id
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert _texts(items)[3:] == [("user", "two"), ("assistant", two)]
    # Items a client adds between turns take their place; the input_items of a turn are
    # its own input.
    sdk.conversations.items.create(conversation.id, items=[{"role": "user", "content": "aside"}])
    third = sdk.responses.create(model="scribe", input="three", conversation=conversation.id)
    assert third.output[0].content[0].text.endswith("user: aside\nuser: three")
    assert [i.content[0].text for i in sdk.responses.input_items.list(third.id)] == ["three"]
    # The management list: conversations, and the responses of one conversation's turns.
    listed = client.get("/api/conversations").json()
    assert [c["id"] for c in listed["data"]] == [conversation.id]
    assert listed["data"][0]["next_position"] == 8
    turns = client.get("/api/responses", params={"conversation": conversation.id}).json()
    assert {r["id"] for r in turns["data"]} == {first.id, second.id, third.id}
    assert all(r["conversation_id"] == conversation.id for r in turns["data"])
    plain = sdk.responses.create(model="scribe", input="elsewhere")
    assert plain.conversation is None
    # Deleting the conversation keeps its turns' responses.
    sdk.conversations.delete(conversation.id)
    assert sdk.responses.retrieve(first.id).conversation.id == conversation.id
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.responses.create(model="scribe", input="x", conversation=conversation.id)
    assert missing.value.body["param"] == "conversation"


def test_bad_input_is_a_4xx_naming_the_field(sdk, client):
    conversation = sdk.conversations.create()
    previous = sdk.responses.create(model="scribe", input="x")
    both = client.post(
        "/v1/responses",
        json={
            "model": "scribe",
            "input": "x",
            "conversation": conversation.id,
            "previous_response_id": previous.id,
        },
    )
    assert both.status_code == 400 and both.json()["error"]["param"] == "conversation"
    unstored = client.post(
        "/v1/responses",
        json={"model": "scribe", "input": "x", "conversation": conversation.id, "store": False},
    )
    assert unstored.status_code == 400 and unstored.json()["error"]["param"] == "conversation"
    for value, status, param in (
        ("conv_01KC0000000000000000000000", 404, "conversation"),
        ("nope", 404, "conversation"),
        ({"id": 5}, 400, "conversation.id"),
        ({"id": conversation.id, "x": 1}, 400, "conversation.x"),
        (7, 400, "conversation"),
    ):
        answer = client.post(
            "/v1/responses", json={"model": "scribe", "input": "x", "conversation": value}
        )
        assert answer.status_code == status, (value, answer.json())
        assert answer.json()["error"]["param"] == param
    good = {"role": "user", "content": [{"type": "input_text", "text": "ok"}]}
    bad = {"role": "user", "content": [{"type": "input_text", "text": 3}]}
    for path, body, param in (
        ("/v1/conversations", {"items": [good, good, good, bad]}, "items[3].content[0].text"),
        (
            f"/v1/conversations/{conversation.id}/items",
            {"items": [bad]},
            "items[0].content[0].text",
        ),
        (f"/v1/conversations/{conversation.id}/items", {"items": []}, "items"),
        (f"/v1/conversations/{conversation.id}/items", {"items": "hi"}, "items"),
        (f"/v1/conversations/{conversation.id}/items", {}, "items"),
        ("/v1/conversations", {"items": [good] * 21}, "items"),
        ("/v1/conversations", {"items": [{"role": "boss", "content": "x"}]}, "items[0].role"),
        ("/v1/conversations", {"metadata": {"k": 1}}, "metadata.k"),
        ("/v1/conversations", {"extra": 1}, "extra"),
        (f"/v1/conversations/{conversation.id}", {}, "metadata"),
        (f"/v1/conversations/{conversation.id}", {"metadata": "x"}, "metadata"),
    ):
        answer = client.post(path, json=body)
        assert answer.status_code == 400, (path, body, answer.json())
        error = answer.json()["error"]
        assert error["param"] == param and param in error["message"], (body, error)
    unknown_cursor = client.get(
        f"/v1/conversations/{conversation.id}/items",
        params={"after": "msg_01KC0000000000000000000000"},
    )
    assert unknown_cursor.status_code == 400
    assert unknown_cursor.json()["error"]["param"] == "after"
    assert list(sdk.conversations.items.list(conversation.id)) == []  # nothing was added


def test_concurrent_turns_stay_contiguous_and_none_is_lost(state_settings):
    # Every turn reads the conversation before any of them finishes (the upstream holds each
    # answer), so all of them race to append at the end.
    turns = 6
    with FakeUpstream(
        models=["m"], latency_ms=1500, reply=lambda body: "re " + body["messages"][-1]["content"]
    ) as upstream:
        model = {"name": "far", "backend": {"type": "openai", "base_url": upstream.base_url}}
        model["backend"]["model"] = "m"
        with TestClient(create_app(_settings(state_settings, [model]))) as client:
            _ready(client)
            sdk = _sdk(client)
            conversation = sdk.conversations.create(items=[{"role": "user", "content": "start"}])
            answers: dict[int, object] = {}

            def turn(k: int) -> None:
                answers[k] = sdk.responses.create(
                    model="far",
                    input=[
                        {"role": "user", "content": f"{k}-a"},
                        {"role": "user", "content": f"{k}-b"},
                    ],
                    conversation=conversation.id,
                    stream=False,
                )

            threads = [threading.Thread(target=turn, args=(k,)) for k in range(turns)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            items = list(sdk.conversations.items.list(conversation.id, order="asc", limit=100))
    assert sorted(answers) == list(range(turns))
    # Each turn saw the conversation as it was when it started: nobody else's turn.
    seen = [[m["content"] for m in r.body["messages"]] for r in upstream.requests]
    assert len(seen) == turns and all(s[0] == "start" and len(s) == 3 for s in seen), seen
    texts = [i.content[0].text for i in items]
    assert texts[0] == "start" and len(texts) == 1 + 3 * turns
    order = []
    for group in range(turns):
        a, b, answer = texts[1 + 3 * group : 4 + 3 * group]
        k = a.split("-")[0]
        assert (a, b, answer) == (f"{k}-a", f"{k}-b", f"re {k}-b"), texts
        assert items[3 + 3 * group].id == answers[int(k)].output[0].id  # type: ignore[attr-defined]
        order.append(int(k))
    assert sorted(order) == list(range(turns))


def test_the_management_list_pages_and_filters(sdk, client):
    made = [sdk.conversations.create(metadata={"n": str(n)}).id for n in range(5)]
    first = client.get("/api/conversations", params={"limit": 2}).json()
    assert [c["id"] for c in first["data"]] == made[::-1][:2] and first["has_more"]
    rest = client.get("/api/conversations", params={"limit": 10, "after": first["last_id"]})
    assert [c["id"] for c in rest.json()["data"]] == made[::-1][2:]
    assert not rest.json()["has_more"]
    ascending = client.get("/api/conversations", params={"order": "asc"}).json()
    assert [c["id"] for c in ascending["data"]] == made
    assert ascending["data"][0]["metadata"] == {"n": "0"}
    future = client.get("/api/conversations", params={"since": "2999-01-01T00:00:00"}).json()
    assert future["data"] == []
    for params, param in (
        ({"since": "2030-01-01T00:00:00", "until": "2020-01-01T00:00:00"}, "since"),
        ({"after": "resp_x"}, "after"),
        ({"bogus": "1"}, "bogus"),
    ):
        answer = client.get("/api/conversations", params=params)
        assert answer.status_code == 400, answer.json()
        assert param in answer.json()["error"]["message"]
    bad = client.get("/api/responses", params={"conversation": "nope"})
    assert bad.status_code == 400
