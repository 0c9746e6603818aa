"""The Responses API through the official SDK with strict response validation, on a fresh
SQLite workspace and a fresh PostgreSQL database: create, chains, retrieve, input items,
delete, streams, images, refusals, store: false, the statement count of a turn, and the
management list."""

import json
import re
import threading
import time
from datetime import timedelta

import openai
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from routekeeper.server.app import create_app
from routekeeper.settings import load_settings
from routekeeper.storage.schema.responses import responses
from routekeeper.storage.types import utcnow
from routekeeper.testing import FakeUpstream

TRANSCRIPT = {"name": "scribe", "backend": {"type": "echo", "reply": "transcript"}}
# Its reply has the same size at every depth (a transcript would double each turn).
PLAIN = {"name": "plain", "backend": {"type": "echo"}}


def _settings(state_settings, models, **sections):
    return load_settings(
        None,
        workspace=state_settings.workspace,
        overrides={
            "state": state_settings.state.model_dump(),
            "models": models,
            "decisions": [{"name": "default", "model": models[0]["name"]}],
            **sections,
        },
    )


def _ready(client):
    deadline = time.monotonic() + 20
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


@pytest.fixture
def app_client(state_settings):
    app = create_app(_settings(state_settings, [TRANSCRIPT, PLAIN]))
    with TestClient(app) as client:
        _ready(client)
        yield app, client


@pytest.fixture
def sdk(app_client):
    _, client = app_client
    return openai.OpenAI(
        base_url="http://testserver/v1",
        api_key="unused",
        http_client=client,
        _strict_response_validation=True,
        max_retries=0,
    )


def _unparsed(value):
    """A dump without the ``parsed`` fields the SDK's stream helper adds on its own."""
    if isinstance(value, dict):
        return {k: _unparsed(v) for k, v in value.items() if k != "parsed"}
    if isinstance(value, list):
        return [_unparsed(v) for v in value]
    return value


def _text(response):
    return response.output[0].content[0].text


def test_create_retrieve_delete(sdk):
    created = sdk.responses.create(model="scribe", input="hello there", metadata={"k": "v"})
    assert created.id.startswith("resp_") and created.status == "completed"
    assert created.object == "response" and created.model == "scribe"
    assert created.metadata == {"k": "v"} and created.tools == [] and created.background is False
    assert _text(created) == "echo:scribe:\nuser: hello there"
    assert created.output[0].id.startswith("msg_") and created.output[0].status == "completed"
    assert created.output[0].content[0].logprobs == []
    usage = created.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    again = sdk.responses.retrieve(created.id)
    assert again.model_dump() == created.model_dump()
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(created.id)


def _echo(*lines):
    return "\n".join(["echo:scribe:", *lines])


def test_a_three_turn_chain_gives_the_model_every_earlier_turn(sdk):
    first = sdk.responses.create(model="scribe", input="one", instructions="be brief")
    second = sdk.responses.create(
        model="scribe", input="two", previous_response_id=first.id, instructions="be kind"
    )
    third = sdk.responses.create(model="scribe", input="three", previous_response_id=second.id)
    # This turn's instructions first (earlier ones are not carried over), then every earlier
    # turn's input and output in order, then the new input.
    one = _echo("system: be brief", "user: one")
    two = _echo("system: be kind", "user: one", f"assistant: {one}", "user: two")
    three = _echo("user: one", f"assistant: {one}", "user: two", f"assistant: {two}", "user: three")
    assert (_text(first), _text(second), _text(third)) == (one, two, three)
    assert third.previous_response_id == second.id and third.instructions is None
    assert second.instructions == "be kind"
    assert sdk.responses.retrieve(third.id).model_dump() == third.model_dump()


def test_two_turns_continuing_one_response_are_independent(sdk):
    root = sdk.responses.create(model="scribe", input="root")
    left = sdk.responses.create(model="scribe", input="left", previous_response_id=root.id)
    right = sdk.responses.create(model="scribe", input="right", previous_response_id=root.id)
    assert "left" not in _text(right) and "right" not in _text(left)
    assert _text(right).endswith("user: root\nuser: right")


def test_an_unknown_previous_response_is_a_404_never_an_empty_history(sdk):
    for unknown in ("resp_01JZZZZZZZZZZZZZZZZZZZZZZZ", "nonsense", "x" * 500):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.responses.create(model="scribe", input="x", previous_response_id=unknown)
        assert caught.value.body["param"] == "previous_response_id"
        assert unknown in caught.value.body["message"]


def test_a_chain_through_a_deleted_response_is_a_404_naming_it(sdk):
    first = sdk.responses.create(model="scribe", input="a")
    second = sdk.responses.create(model="scribe", input="b", previous_response_id=first.id)
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.create(model="scribe", input="c", previous_response_id=second.id)
    assert first.id in caught.value.body["message"]


def test_store_false_stores_nothing_but_replay_records_it(sdk, app_client):
    _, client = app_client
    raw = sdk.responses.with_raw_response.create(model="scribe", input="secret", store=False)
    answered = raw.parse()
    assert answered.status == "completed" and _text(answered).endswith("user: secret")
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(answered.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="scribe", input="x", previous_response_id=answered.id)
    replay = client.get(f"/api/replay/{raw.headers['x-routekeeper-replay-id']}").json()
    assert replay["response_id"] == answered.id and replay["endpoint"] == "/v1/responses"
    assert client.get("/api/responses").json()["data"] == []


def test_input_items_auto_paginate_over_250_items(sdk):
    items = [{"role": "user", "content": f"item {i}"} for i in range(250)]
    created = sdk.responses.create(model="scribe", input=items)
    listed = list(sdk.responses.input_items.list(created.id, order="asc", limit=17))
    assert [i.content[0].text for i in listed] == [f"item {i}" for i in range(250)]
    assert len({i.id for i in listed}) == 250
    newest_first = list(sdk.responses.input_items.list(created.id))
    assert [i.id for i in newest_first] == [i.id for i in reversed(listed)]
    again = list(sdk.responses.input_items.list(created.id, order="asc", limit=100))
    assert [i.id for i in again] == [i.id for i in listed]  # stable ids
    page = sdk.responses.input_items.list(created.id, limit=5)
    assert len(page.data) == 5 and page.has_more


def test_input_items_keep_roles_and_parts(sdk):
    created = sdk.responses.create(
        model="scribe",
        input=[
            {"role": "developer", "content": "rules"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBORw0KGgo=",
                        "detail": "low",
                    },
                ],
            },
            {"role": "assistant", "content": "seen"},
            {"role": "user", "content": "and?"},
        ],
    )
    items = list(sdk.responses.input_items.list(created.id, order="asc"))
    assert [i.role for i in items] == ["developer", "user", "assistant", "user"]
    assert items[1].content[1].type == "input_image" and items[1].content[1].detail == "low"
    assert items[2].content[0].type == "output_text"
    assert _text(created).splitlines()[1:] == [
        "developer: rules",
        "user: look [image]",
        "assistant: seen",
        "user: and?",
    ]


def test_a_stream_follows_the_responses_event_sequence_and_is_stored(sdk):
    with sdk.responses.stream(model="scribe", input="stream me", metadata={"a": "b"}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.status == "completed" and _text(final) == "echo:scribe:\nuser: stream me"
    stored = sdk.responses.retrieve(final.id)
    assert stored.model_dump() == _unparsed(final.model_dump())
    follow = sdk.responses.create(model="scribe", input="next", previous_response_id=final.id)
    assert "user: stream me" in _text(follow)


def test_every_stream_event_has_an_event_line_naming_its_type(app_client):
    _, client = app_client
    with client.stream(
        "POST", "/v1/responses", json={"model": "scribe", "input": "x", "stream": True}
    ) as response:
        body = "".join(response.iter_text())
    frames = [f for f in body.split("\n\n") if f.strip()]
    assert frames
    for frame in frames:
        kind = re.search(r"^event: (.+)$", frame, re.M).group(1)
        data = json.loads(re.search(r"^data: (.+)$", frame, re.M).group(1))
        assert data["type"] == kind


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "scribe"}, "input"),
        ({"model": "scribe", "input": "x", "background": True}, "background"),
        (
            {"model": "scribe", "input": "x", "conversation": "conv_1", "store": False},
            "conversation",
        ),
        ({"model": "scribe", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "scribe", "input": "x", "prompt": {"id": "p"}}, "prompt"),
        ({"model": "scribe", "input": "x", "bogus": 1}, "bogus"),
        (
            {"model": "scribe", "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}},
            "metadata",
        ),
        ({"model": "scribe", "input": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"model": "scribe", "input": "x", "metadata": {"k" * 65: "v"}}, "metadata"),
        ({"model": "scribe", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"model": "scribe", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
        ),
        (
            {"model": "scribe", "input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
        ),
        ({"model": "scribe", "input": "x", "temperature": 3}, "temperature"),
        ({"model": "scribe", "input": "x", "max_output_tokens": 2**40}, "max_output_tokens"),
        ({"model": "scribe", "input": "x", "reasoning": {"summary": "auto"}}, "reasoning.summary"),
        (
            {"model": "scribe", "input": "x", "text": {"format": {"type": "yaml"}}},
            "text.format.type",
        ),
    ],
)
def test_bad_or_refused_fields_are_a_400_naming_them(app_client, body, param):
    _, client = app_client
    response = client.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_forwarded_fields_reach_the_upstream_and_are_echoed(state_settings):
    with FakeUpstream(models=["m"]) as upstream:
        model = {
            "name": "far",
            "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
        }
        with TestClient(create_app(_settings(state_settings, [model]))) as client:
            _ready(client)
            sdk = openai.OpenAI(
                base_url="http://testserver/v1",
                api_key="x",
                http_client=client,
                _strict_response_validation=True,
                max_retries=0,
            )
            created = sdk.responses.create(
                model="far",
                instructions="sys",
                input=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "what is this?"},
                            {"type": "input_image", "image_url": "https://example.com/cat.png"},
                        ],
                    }
                ],
                service_tier="flex",
                user="u1",
                safety_identifier="s1",
                prompt_cache_key="c1",
                max_output_tokens=50,
                temperature=0.5,
                text={"format": {"type": "json_object"}},
                reasoning={"effort": "low"},
            )
    sent = upstream.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "sys"}
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.com/cat.png", "detail": "auto"},
        },
    ]
    assert sent["service_tier"] == "flex" and sent["user"] == "u1"
    assert sent["safety_identifier"] == "s1" and sent["prompt_cache_key"] == "c1"
    assert sent["max_completion_tokens"] == 50 and sent["temperature"] == 0.5
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["reasoning_effort"] == "low"
    assert created.service_tier == "flex" and created.user == "u1"
    assert created.safety_identifier == "s1" and created.prompt_cache_key == "c1"
    assert created.max_output_tokens == 50 and created.temperature == 0.5
    assert created.text.format.type == "json_object" and created.reasoning.effort == "low"


def test_an_upstream_failure_is_stored_failed(state_settings):
    with FakeUpstream(models=["m"], error_status=500) as upstream:
        model = {
            "name": "far",
            "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
        }
        with TestClient(create_app(_settings(state_settings, [model]))) as client:
            _ready(client)
            response = client.post("/v1/responses", json={"model": "far", "input": "x"})
            assert response.status_code >= 500
            listed = client.get("/api/responses").json()["data"]
            assert [r["status"] for r in listed] == ["failed"]
            assert listed[0]["error"]["code"] == "server_error"
            stored = client.get(f"/v1/responses/{listed[0]['id']}").json()
            assert stored["status"] == "failed" and stored["output"] == []


def test_the_management_list_filters_and_pages(sdk, app_client):
    _, client = app_client
    ids = [sdk.responses.create(model="scribe", input=str(i)).id for i in range(5)]
    page = client.get("/api/responses", params={"limit": 2}).json()
    assert [r["id"] for r in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = client.get("/api/responses", params={"after": page["last_id"]}).json()
    assert [r["id"] for r in rest["data"]] == ids[::-1][2:]
    assert len(client.get("/api/responses", params={"status": "completed"}).json()["data"]) == 5
    assert client.get("/api/responses", params={"model": "other"}).json()["data"] == []
    assert client.get("/api/responses", params={"status": "bogus"}).status_code == 400
    assert client.get("/api/responses", params={"nope": "1"}).status_code == 400


def test_building_a_turn_costs_the_same_statements_at_depth_2_and_51(app_client, sdk):
    app, _ = app_client
    db = app.state.replica.storage.database_for("responses")
    counted: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if re.search(r"\bresponse(s|_items)\b", statement):
            counted.append(statement)

    chain = []
    for turn in range(50):
        previous = chain[-1] if chain else None
        chain.append(
            sdk.responses.create(model="plain", input=str(turn), previous_response_id=previous).id
        )
    engines = db.engines()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    seen: dict[int, list[list[str]]] = {2: [], 51: []}
    try:
        # Turn 2 continues a one-response chain, turn 51 a fifty-response one. Each is taken
        # three times (sibling turns); the replica's own background work (retention, sweeps)
        # can only add statements to a sample, so the smallest sample is the turn's cost.
        for _ in range(3):
            for depth, previous in ((2, chain[0]), (51, chain[-1])):
                counted.clear()
                sdk.responses.create(model="plain", input="x", previous_response_id=previous)
                seen[depth].append(list(counted))
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
    cost = {depth: min(len(s) for s in samples) for depth, samples in seen.items()}
    assert cost[2] == cost[51] > 0, seen


def test_an_expired_response_is_a_404_before_retention_deletes_it(app_client):
    app, client = app_client
    created = client.post("/v1/responses", json={"model": "scribe", "input": "x"}).json()
    chained = client.post(
        "/v1/responses",
        json={"model": "scribe", "input": "y", "previous_response_id": created["id"]},
    ).json()
    db = app.state.replica.storage.database_for("responses")

    async def age() -> None:  # as if it had been created 31 days ago (retention_days 30)
        async with db.write() as conn:
            await conn.execute(
                update(responses)
                .where(responses.c.id == created["id"])
                .values(created_at=utcnow() - timedelta(days=31))
            )

    client.portal.call(age)
    assert client.get(f"/v1/responses/{created['id']}").status_code == 404
    assert client.get(f"/v1/responses/{created['id']}/input_items").status_code == 404
    again = client.post(
        "/v1/responses",
        json={"model": "scribe", "input": "z", "previous_response_id": chained["id"]},
    )
    assert again.status_code == 404 and created["id"] in again.json()["error"]["message"]
    assert client.get(f"/v1/responses/{chained['id']}").status_code == 200


def test_not_found_ids_are_404_in_the_openai_envelope(app_client):
    _, client = app_client
    for path in ("/v1/responses/resp_nope", "/v1/responses/x/input_items"):
        response = client.get(path)
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert client.delete("/v1/responses/" + "r" * 300).status_code == 404


def test_client_values_are_stored_as_sent(sdk):
    text = "nul\u0000 emoji \U0001f600 rtl \u202e"
    created = sdk.responses.create(model="scribe", input=text, metadata={"k": text[:20]})
    stored = sdk.responses.retrieve(created.id)
    assert _text(stored).endswith(text) and stored.metadata == {"k": text[:20]}
    items = list(sdk.responses.input_items.list(created.id))
    assert items[0].content[0].text == text


def test_a_lone_surrogate_is_a_400(app_client):
    _, client = app_client
    response = client.post(
        "/v1/responses",
        content=b'{"model": "scribe", "input": "\\ud800"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400


def test_an_upstream_lone_surrogate_becomes_a_replacement_character(state_settings):
    # JSON can carry "\ud800" but UTF-8 cannot: the response must still be answered, streamed
    # to its terminal event, stored as it was answered, and retrievable.
    with FakeUpstream(models=["m"], reply="bad \ud800 x") as upstream:
        model = {
            "name": "far",
            "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
        }
        with TestClient(create_app(_settings(state_settings, [model]))) as client:
            _ready(client)
            sdk = openai.OpenAI(
                base_url="http://testserver/v1",
                api_key="x",
                http_client=client,
                _strict_response_validation=True,
                max_retries=0,
            )
            created = sdk.responses.create(model="far", input="x")
            assert created.status == "completed" and _text(created) == "bad \ufffd x"
            assert _text(sdk.responses.retrieve(created.id)) == "bad \ufffd x"
            with sdk.responses.stream(model="far", input="x") as stream:
                kinds = [e.type for e in stream]
                final = stream.get_final_response()
            assert kinds[-1] == "response.completed" and _text(final) == "bad \ufffd x"
            stored = sdk.responses.retrieve(final.id)
            assert stored.status == "completed" and _text(stored) == "bad \ufffd x"


@pytest.mark.parametrize("stream", [False, True])
def test_a_response_recovery_failed_meanwhile_is_answered_as_stored(state_settings, stream):
    # Recovery fails the in-progress responses of a replica taken for dead; if that replica
    # still finishes one, its client is told what is stored, not an uncommitted "completed".
    body = {"model": "far", "input": "x", "stream": stream}

    def create(client):
        if not stream:
            return client.post("/v1/responses", json=body).json()
        with client.stream("POST", "/v1/responses", json=body) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        last = json.loads(lines[-1][len("data: ") :])
        assert last["type"] == "response.failed", last
        return last["response"]

    with FakeUpstream(models=["m"], latency_ms=1500) as upstream:
        model = {
            "name": "far",
            "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
        }
        app = create_app(_settings(state_settings, [model]))
        with TestClient(app) as client:
            _ready(client)
            replica = app.state.replica
            answers = []
            thread = threading.Thread(target=lambda: answers.append(create(client)))
            thread.start()
            assert upstream.wait_for_requests(1, timeout=10)
            deadline = time.monotonic() + 10
            while not client.get("/api/responses", params={"status": "in_progress"}).json()["data"]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            store = replica.responses.store
            assert client.portal.call(store.fail_in_flight, [replica.runtime.id]) == 1
            thread.join(timeout=20)
            answer = answers[0]
            stored = client.get(f"/v1/responses/{answer['id']}").json()
    assert answer["status"] == stored["status"] == "failed", answer
    assert answer["error"] == stored["error"] and answer["output"] == stored["output"]
