"""Function tools and conversations at their edges, through a real server process with the
official SDK (strict validation) and httpx as clients and the fake upstream as the model: the
event stream of a turn with calls, a stream cut mid-call, a client leaving mid-call, an
upstream error on a turn, an upstream call carrying lone surrogates, and a conversation's item
pages around function calls."""

import json
import time

import httpx
import openai
import pytest
import yaml

from routekeeper.testing import FakeUpstream, ServerProcess

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
PARIS = '{"city": "Paris"}'
ROME = '{"city": "Rome"}'


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(models=["m"], stream_chunks=3) as up:
        yield up


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    root = tmp_path_factory.mktemp("tool-edges")
    config = root / "routekeeper.yaml"
    backend = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    models = [{"name": "tooled", "backend": backend}]
    decisions = [{"name": "default", "model": "tooled"}]
    config.write_text(yaml.safe_dump({"models": models, "decisions": decisions}))
    with ServerProcess(workspace=root / "ws", config=config) as process:
        yield process


@pytest.fixture
def up(upstream):
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture
def sdk(server):
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="x", max_retries=0, _strict_response_validation=True
    )
    yield client
    client.close()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _turn(conversation: str, text: str, *, stream: bool) -> dict:
    return {
        "model": "tooled",
        "input": text,
        "tools": [WEATHER],
        "conversation": conversation,
        "stream": stream,
    }


def _events(http: httpx.Client, body: dict) -> list[dict]:
    with http.stream("POST", "/v1/responses", json=body) as answer:
        assert answer.status_code == 200, answer.read()
        return [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]


def _item_ids(sdk, conversation: str) -> list[str]:
    return [i.id for i in sdk.conversations.items.list(conversation, order="asc", limit=100)]


def _check_stream(events: list[dict]) -> dict:
    """The stream's invariants; returns its final response."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    placed: dict[str, int] = {}
    for event in events:
        if event["type"] == "response.output_item.added":
            assert event["output_index"] == len(placed)  # items open in output order
            placed[event["item"]["id"]] = event["output_index"]
        elif "item_id" in event:
            assert placed[event["item_id"]] == event["output_index"], event
    final = events[-1]["response"]
    assert [item["id"] for item in final["output"]] == list(placed)
    for event in events:
        if event["type"] == "response.output_item.done":
            assert final["output"][event["output_index"]] == event["item"]
    return final


def test_a_streamed_turn_with_text_and_calls_keeps_its_indexes_and_is_appended(sdk, http, up):
    conversation = sdk.conversations.create().id
    up.configure(reply="Checking.", tool_calls=[{"name": "get_weather", "arguments": PARIS}] * 2)
    events = _events(http, _turn(conversation, "Weather?", stream=True))
    final = _check_stream(events)
    assert events[-1]["type"] == "response.completed"
    assert [o["type"] for o in final["output"]] == ["message", "function_call", "function_call"]
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    for call in final["output"][1:]:
        pieces = [e["delta"] for e in deltas if e["item_id"] == call["id"]]
        assert "".join(pieces) == call["arguments"] == PARIS
    # The input, then the output in its order, are the conversation's items.
    assert _item_ids(sdk, conversation)[1:] == [o["id"] for o in final["output"]]


def test_pages_of_a_conversation_may_end_on_a_function_call(sdk, up):
    conversation = sdk.conversations.create().id
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}])
    first = sdk.responses.create(
        model="tooled", input="Weather?", tools=[WEATHER], conversation=conversation
    )
    up.configure(tool_calls=None, reply="Sunny.")
    output = {"type": "function_call_output", "call_id": first.output[0].call_id, "output": "{}"}
    sdk.responses.create(model="tooled", input=[output], tools=[WEATHER], conversation=conversation)
    everything = _item_ids(sdk, conversation)
    assert [i.split("_")[0] for i in everything] == ["msg", "fc", "msg", "msg"]
    # Page size 2 ascending: the first page ends on the call, and the SDK's next page asks
    # for what comes after it.
    page = sdk.conversations.items.list(conversation, order="asc", limit=2)
    assert page.last_id == first.output[0].id and page.has_more
    assert [i.id for i in page.data] == everything[:2]
    for order, expected in (("asc", everything), ("desc", everything[::-1])):
        for limit in (1, 2, 3):
            listed = sdk.conversations.items.list(conversation, order=order, limit=limit)
            assert [i.id for i in listed] == expected, (order, limit)
    descending = sdk.conversations.items.list(conversation, order="desc", limit=3)
    assert descending.last_id == first.output[0].id and descending.has_more
    rest = sdk.conversations.items.list(conversation, order="desc", after=first.output[0].id)
    assert [i.id for i in rest.data] == everything[:1] and not rest.has_more
    # At an exact page boundary has_more is false, and a page after the last item is empty.
    exact = sdk.conversations.items.list(conversation, order="asc", limit=4)
    assert len(exact.data) == 4 and not exact.has_more
    after_last = sdk.conversations.items.list(conversation, order="asc", after=everything[-1])
    assert after_last.data == [] and not after_last.has_more
    # Deleting the call in the middle: the pages close over it.
    sdk.conversations.items.delete(first.output[0].id, conversation_id=conversation)
    left = [i.id for i in sdk.conversations.items.list(conversation, order="asc", limit=1)]
    assert left == [everything[0], *everything[2:]]


def test_a_stream_cut_mid_call_fails_and_leaves_the_conversation_as_it_was(sdk, http, up):
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "hello"}]).id
    before = _item_ids(sdk, conversation)
    # The call's first fragment and one piece of its arguments, then the connection closes.
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}], fail_after_chunks=2)
    events = _events(http, _turn(conversation, "Weather?", stream=True))
    final = _check_stream(events)
    assert events[-1]["type"] == "response.failed" and final["status"] == "failed"
    [call] = final["output"]
    assert call["type"] == "function_call" and call["status"] == "incomplete"
    assert PARIS.startswith(call["arguments"]) and call["arguments"] != PARIS
    stored = sdk.responses.retrieve(final["id"])
    assert stored.status == "failed" and stored.output[0].model_dump(exclude_unset=True) == call
    assert _item_ids(sdk, conversation) == before


def test_a_client_leaving_mid_call_cancels_and_leaves_the_conversation_as_it_was(sdk, server, up):
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "hello"}]).id
    before = _item_ids(sdk, conversation)
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}], chunk_delay_ms=300)
    seen: list[dict] = []
    with (
        httpx.Client(base_url=server.url, timeout=60) as leaving,
        leaving.stream(
            "POST", "/v1/responses", json=_turn(conversation, "Weather?", stream=True)
        ) as answer,
    ):
        for line in answer.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["type"] == "response.function_call_arguments.delta":
                    break
    assert up.wait_for_disconnects(1, timeout=30)
    response_id = seen[0]["response"]["id"]
    deadline = time.monotonic() + 30
    while (stored := sdk.responses.retrieve(response_id)).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert stored.status == "cancelled"
    # What the client was shown of the call is kept in the response, not in the conversation.
    [call] = stored.output
    assert call.type == "function_call" and call.status == "incomplete"
    assert call.id == seen[-1]["item_id"] and call.arguments.startswith(seen[-1]["delta"])
    assert _item_ids(sdk, conversation) == before


@pytest.mark.parametrize("stream", [False, True])
def test_a_turn_the_upstream_refuses_appends_nothing(sdk, http, up, stream):
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "hello"}]).id
    before = _item_ids(sdk, conversation)
    up.configure(error_status=429)
    answer = http.post("/v1/responses", json=_turn(conversation, "Weather?", stream=stream))
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["type"] == "rate_limit_error"
    assert _item_ids(sdk, conversation) == before
    # A later turn sees the conversation without the refused one.
    up.configure(error_status=None, reply="ok")
    sdk.responses.create(model="tooled", input="again", conversation=conversation)
    assert [m["content"] for m in up.requests[-1].body["messages"]] == ["hello", "again"]


@pytest.mark.parametrize("stream", [False, True])
def test_lone_surrogates_in_an_upstream_call_are_replaced(sdk, http, up, stream):
    conversation = sdk.conversations.create().id
    up.configure(
        tool_calls=[{"id": "call_\udc00", "name": "get\ud800", "arguments": '{"city": "\ud83d"}'}]
    )
    body = _turn(conversation, "Weather?", stream=stream)
    if stream:
        final = _check_stream(_events(http, body))
    else:
        answer = http.post("/v1/responses", json=body)
        assert answer.status_code == 200, answer.text
        final = answer.json()
    [call] = final["output"]
    assert (call["call_id"], call["name"]) == ("call_\ufffd", "get\ufffd")
    assert call["arguments"] == '{"city": "\ufffd"}'
    assert sdk.responses.retrieve(final["id"]).output[0].model_dump(exclude_unset=True) == call
    [_, appended] = sdk.conversations.items.list(conversation, order="asc")
    assert appended.model_dump(exclude_unset=True) == call


def test_an_image_detail_that_is_not_a_detail_is_a_400(http):
    image = {"type": "input_image", "image_url": "https://example.com/a.png"}
    for detail in ("", [], 0, False):
        item = {"role": "user", "content": [{**image, "detail": detail}]}
        for path, body, param in (
            ("/v1/conversations", {"items": [item]}, "items[0].content[0].detail"),
            ("/v1/responses", {"model": "tooled", "input": [item]}, "input[0].content[0].detail"),
        ):
            answer = http.post(path, json=body)
            assert answer.status_code == 400, (detail, answer.text)
            assert answer.json()["error"]["param"] == param


def test_an_integer_too_long_to_convert_is_a_400_anywhere_in_a_body(http):
    huge = "9" * 5000
    for path, template in (
        ("/v1/conversations", '{"metadata": {"k": HUGE}}'),
        ("/v1/conversations", '{"items": [{"role": "user", "content": "x", "z": -HUGE}]}'),
        (
            "/v1/responses",
            '{"model": "tooled", "input": "x", "tools": [{"type": "function", "name": "f", '
            '"parameters": {"maximum": HUGE}}]}',
        ),
    ):
        raw = template.replace("HUGE", huge)
        answer = http.post(path, content=raw, headers={"content-type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert "more than 4300 digits" in answer.json()["error"]["message"]
