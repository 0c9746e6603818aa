"""Function tools on the Responses API, through a real server process, with the official SDK
(strict validation) as the client and the fake upstream as the model: the tool round trip
(plain, streamed, parallel calls), what the upstream receives, tool_choice, the refusals,
and what is stored."""

import json

import httpx
import openai
import pytest
import yaml

from routekeeper.testing import FakeUpstream, ServerProcess

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
PARIS = '{"city": "Paris"}'


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(models=["m"], stream_chunks=3) as up:
        yield up


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    root = tmp_path_factory.mktemp("tools")
    config = root / "routekeeper.yaml"
    backend = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    models = [
        {"name": "tooled", "backend": backend},
        {"name": "scribe", "backend": {"type": "echo", "reply": "transcript"}},
    ]
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
        base_url=f"{server.url}/v1",
        api_key="x",
        max_retries=0,
        _strict_response_validation=True,
    )
    yield client
    client.close()


def _sent(up: FakeUpstream) -> dict:
    """The last chat request the upstream received."""
    return up.requests[-1].body


def _plain(item) -> dict:
    """An output item as data (a stream's final response adds ``parsed_arguments``)."""
    data = item.model_dump()
    data.pop("parsed_arguments", None)
    return data


def _output_of(call_id: str, output: str) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def test_a_function_tool_round_trip(sdk, up):
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}])
    first = sdk.responses.create(
        model="tooled", input="Weather in Paris?", tools=[WEATHER], instructions="be brief"
    )
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["function_call"]
    call = first.output[0]
    assert call.id.startswith("fc_") and call.status == "completed"
    assert (call.name, call.arguments) == ("get_weather", PARIS)
    assert (
        first.tools[0].name == "get_weather" and first.tools[0].parameters == WEATHER["parameters"]
    )
    assert first.tool_choice == "auto" and first.parallel_tool_calls is True
    sent = _sent(up)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert "tool_choice" not in sent and "parallel_tool_calls" not in sent

    up.configure(tool_calls=None, reply="It is 22C in Paris.")
    second = sdk.responses.create(
        model="tooled",
        input=[_output_of(call.call_id, '{"temperature": 22}')],
        previous_response_id=first.id,
        tools=[WEATHER],
    )
    assert second.status == "completed" and second.output_text == "It is 22C in Paris."
    assert first.instructions == "be brief" and _sent(up)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": PARIS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": '{"temperature": 22}'},
    ]

    # Stored: the calls are the first response's output, the result the second's input.
    assert sdk.responses.retrieve(first.id).output == first.output
    items = list(sdk.responses.input_items.list(second.id))
    assert [(i.type, i.call_id, i.output, i.status) for i in items] == [
        ("function_call_output", call.call_id, '{"temperature": 22}', "completed")
    ]
    assert items[0].id.startswith("msg_")


def test_a_streamed_function_tool_round_trip(sdk, up):
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}])
    with sdk.responses.stream(model="tooled", input="Weather?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.output_text.delta" not in kinds
    added = events[2]
    assert added.item.type == "function_call" and added.item.status == "in_progress"
    assert added.item.arguments == ""
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) == 3 and "".join(d.delta for d in deltas) == PARIS
    assert {(d.item_id, d.output_index) for d in deltas} == {(added.item.id, 0)}
    assert events[-3].arguments == PARIS and events[-3].item_id == added.item.id
    call = final.output[0]
    assert final.status == "completed" and len(final.output) == 1
    assert (call.type, call.id, call.call_id, call.name, call.arguments, call.status) == (
        "function_call",
        added.item.id,
        added.item.call_id,
        "get_weather",
        PARIS,
        "completed",
    )
    assert _plain(events[-2].item) == _plain(call)
    assert [_plain(o) for o in sdk.responses.retrieve(final.id).output] == [_plain(call)]

    up.configure(tool_calls=None, reply="Sunny.")
    with sdk.responses.stream(
        model="tooled",
        input=[_output_of(call.call_id, "sunny")],
        previous_response_id=final.id,
        tools=[WEATHER],
    ) as stream:
        answer = stream.get_final_response()
    assert answer.output_text == "Sunny."
    roles = [m["role"] for m in _sent(up)["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert _sent(up)["messages"][1]["tool_calls"][0]["id"] == call.call_id


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_calls_are_several_items_and_one_assistant_message(sdk, up, stream):
    up.configure(
        tool_calls=[
            {"name": "get_weather", "arguments": PARIS},
            {"name": "get_time", "arguments": '{"zone": "CET"}'},
        ]
    )
    request = {"model": "tooled", "input": "Weather and time?", "tools": [WEATHER, TIME]}
    if stream:
        with sdk.responses.stream(**request) as events:
            seen = list(events)
            first = events.get_final_response()
        added = [e for e in seen if e.type == "response.output_item.added"]
        assert [(e.output_index, e.item.name) for e in added] == [
            (0, "get_weather"),
            (1, "get_time"),
        ]
        deltas = [e for e in seen if e.type == "response.function_call_arguments.delta"]
        assert "".join(d.delta for d in deltas if d.output_index == 1) == '{"zone": "CET"}'
    else:
        first = sdk.responses.create(**request)
    assert [(o.type, o.name) for o in first.output] == [
        ("function_call", "get_weather"),
        ("function_call", "get_time"),
    ]
    weather, clock = first.output
    assert weather.call_id != clock.call_id and weather.id != clock.id

    # Without a stored chain: the client sends the calls back itself, as the SDK docs do.
    up.configure(tool_calls=None, reply="done")
    context = [
        {"role": "user", "content": "Weather and time?"},
        *first.output,
        _output_of(weather.call_id, "sunny"),
        _output_of(clock.call_id, "12:00"),
    ]
    second = sdk.responses.create(model="tooled", input=context, tools=[WEATHER, TIME])
    assert second.output_text == "done"
    messages = _sent(up)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == [weather.call_id, clock.call_id]
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == ["get_weather", "get_time"]
    assert [m["tool_call_id"] for m in messages[2:]] == [weather.call_id, clock.call_id]
    items = list(sdk.responses.input_items.list(second.id, order="asc"))
    assert [i.type for i in items] == [
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
    ]
    assert [i.id for i in items] == sorted(i.id for i in items)


@pytest.mark.parametrize("stream", [False, True])
def test_text_before_the_calls_is_a_message_item_first(sdk, up, stream):
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}], reply="Let me check.")
    request = {"model": "tooled", "input": "Weather?", "tools": [WEATHER]}
    if stream:
        with sdk.responses.stream(**request) as events:
            seen = list(events)
            first = events.get_final_response()
        done = [e for e in seen if e.type == "response.output_item.done"]
        assert [(e.output_index, e.item.type) for e in done] == [
            (0, "message"),
            (1, "function_call"),
        ]
    else:
        first = sdk.responses.create(**request)
    assert [o.type for o in first.output] == ["message", "function_call"]
    assert first.output_text == "Let me check."
    up.configure(tool_calls=None, reply="Sunny.")
    sdk.responses.create(
        model="tooled",
        input=[_output_of(first.output[1].call_id, "sunny")],
        previous_response_id=first.id,
    )
    assistant = _sent(up)["messages"][1]
    assert assistant["content"] == "Let me check." and len(assistant["tool_calls"]) == 1


@pytest.mark.parametrize(
    ("given", "echoed", "sent"),
    [
        ({}, "auto", None),
        ({"tool_choice": "auto"}, "auto", "auto"),
        ({"tool_choice": "none"}, "none", "none"),
        ({"tool_choice": "required"}, "required", "required"),
        (
            {"tool_choice": {"type": "function", "name": "get_time"}},
            {"type": "function", "name": "get_time"},
            {"type": "function", "function": {"name": "get_time"}},
        ),
    ],
)
def test_tool_choice_reaches_the_upstream_translated(sdk, up, given, echoed, sent):
    response = sdk.responses.create(
        model="tooled", input="x", tools=[WEATHER, TIME], parallel_tool_calls=False, **given
    )
    body = _sent(up)
    assert body.get("tool_choice") == sent and body["parallel_tool_calls"] is False
    choice = response.tool_choice
    assert (choice if isinstance(choice, str) else choice.model_dump()) == echoed
    assert response.parallel_tool_calls is False
    assert sdk.responses.retrieve(response.id).tool_choice == response.tool_choice


def test_without_tools_nothing_about_tools_is_sent(sdk, up):
    response = sdk.responses.create(model="tooled", input="x", tool_choice="none", tools=[])
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(_sent(up))
    assert response.tools == [] and response.tool_choice == "none"


HOSTED = (
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "custom",
    "shell",
)


def _bad(**fields):
    return {"model": "tooled", "input": "x", **fields}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        *[(_bad(tools=[{"type": kind}]), "tools[0].type") for kind in HOSTED],
        (_bad(tools=[WEATHER, {"type": "file_search", "vector_store_ids": []}]), "tools[1].type"),
        (_bad(tools=[{"name": "f"}]), "tools[0].type"),
        (_bad(tools=[{"type": "function"}]), "tools[0].name"),
        (_bad(tools=[{"type": "function", "name": "get weather"}]), "tools[0].name"),
        (_bad(tools=[{"type": "function", "name": "f" * 65}]), "tools[0].name"),
        (_bad(tools=[{"type": "function", "name": "f", "parameters": "x"}]), "tools[0].parameters"),
        (_bad(tools=[{"type": "function", "name": "f", "strict": "yes"}]), "tools[0].strict"),
        (_bad(tools=[{"type": "function", "name": "f", "bogus": 1}]), "tools[0].bogus"),
        (_bad(tools=[WEATHER, WEATHER]), "tools[1].name"),
        (_bad(tools={"type": "function"}), "tools"),
        (
            _bad(tools=[WEATHER], tool_choice={"type": "function", "name": "nope"}),
            "tool_choice.name",
        ),
        (_bad(tools=[WEATHER], tool_choice={"type": "function"}), "tool_choice.name"),
        (_bad(tools=[WEATHER], tool_choice={"type": "web_search_preview"}), "tool_choice.type"),
        (_bad(tools=[WEATHER], tool_choice="sometimes"), "tool_choice"),
        (_bad(tool_choice="required"), "tool_choice"),
        (_bad(input=[_output_of("call_unknown", "x")]), "input[0].call_id"),
        (
            _bad(input=[{"type": "function_call", "call_id": "c", "name": "f"}]),
            "input[0].arguments",
        ),
        (
            _bad(input=[{"type": "function_call", "call_id": "c", "name": "f g", "arguments": ""}]),
            "input[0].name",
        ),
        (
            _bad(input=[{"type": "function_call_output", "call_id": "c", "output": 3}]),
            "input[0].output",
        ),
        (
            _bad(input=[{"type": "function_call_output", "call_id": "", "output": "x"}]),
            "input[0].call_id",
        ),
        (
            _bad(
                input=[
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "http://x"}],
                    }
                ]
            ),
            "input[0].output[0].type",
        ),
    ],
)
def test_hosted_and_malformed_tools_are_a_400_naming_the_field(server, up, body, param):
    response = httpx.post(f"{server.url}/v1/responses", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert not up.requests  # refused before any upstream call


def test_the_echo_transcript_shows_tool_calls_and_results(sdk):
    context = [
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": PARIS},
        _output_of("call_1", "sunny"),
    ]
    response = sdk.responses.create(model="scribe", input=context, tools=[WEATHER], store=False)
    assert response.output_text.splitlines()[1:] == [
        "user: Weather?",
        f"assistant: [tool_call call_1 get_weather {PARIS}]",
        "tool: [call_1] sunny",
    ]


def test_a_function_call_output_may_be_text_parts(sdk, up):
    up.configure(reply="ok")
    context = [
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": PARIS},
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": [{"type": "input_text", "text": "sun"}, {"type": "input_text", "text": "ny"}],
        },
    ]
    response = sdk.responses.create(model="tooled", input=context, tools=[WEATHER])
    assert _sent(up)["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    items = list(sdk.responses.input_items.list(response.id, order="asc"))
    assert items[1].output[1].text == "ny"
    assert json.loads(items[0].arguments) == {"city": "Paris"}


@pytest.mark.restart(surface="responses")
@pytest.mark.restart(surface="response_items")
def test_sigkill_keeps_function_calls_and_their_outputs(server_factory, up):
    backend = {"type": "openai", "base_url": up.base_url, "model": "m"}
    config = {
        "models": [{"name": "tooled", "backend": backend}],
        "decisions": [{"name": "default", "model": "tooled"}],
    }
    first = server_factory(**config).start()
    client = openai.OpenAI(
        base_url=f"{first.url}/v1", api_key="x", max_retries=0, _strict_response_validation=True
    )
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}] * 2)
    with client.responses.stream(model="tooled", input="Weather?", tools=[WEATHER]) as stream:
        calls = stream.get_final_response()
    up.configure(tool_calls=None, reply="Sunny twice.")
    answer = client.responses.create(
        model="tooled",
        input=[_output_of(c.call_id, "sunny") for c in calls.output],
        previous_response_id=calls.id,
        tools=[WEATHER],
    )
    before = [
        client.responses.retrieve(calls.id).model_dump(),
        [i.model_dump() for i in client.responses.input_items.list(answer.id)],
    ]
    client.close()
    first.kill()

    second = server_factory(**config).start()
    client = openai.OpenAI(
        base_url=f"{second.url}/v1", api_key="x", max_retries=0, _strict_response_validation=True
    )
    after = [
        client.responses.retrieve(calls.id).model_dump(),
        [i.model_dump() for i in client.responses.input_items.list(answer.id)],
    ]
    assert after == before
    assert [o["type"] for o in after[0]["output"]] == ["function_call", "function_call"]
    assert [i["type"] for i in after[1]] == ["function_call_output"] * 2
    # The chain still gives the model its calls and their outputs after the restart.
    up.configure(reply="again")
    client.responses.create(model="tooled", input="And now?", previous_response_id=answer.id)
    client.close()
    roles = [m["role"] for m in _sent(up)["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "assistant", "user"]


def test_a_function_tool_round_trip_on_a_conversation(sdk, up):
    """The call is in the conversation's items, so the next turn's output for it is accepted
    and reaches the model after the assistant's tool call; the conversation holds both turns."""
    conversation = sdk.conversations.create()
    up.configure(tool_calls=[{"name": "get_weather", "arguments": PARIS}])
    first = sdk.responses.create(
        model="tooled", input="Weather in Paris?", tools=[WEATHER], conversation=conversation.id
    )
    [call] = first.output
    assert call.type == "function_call"

    up.configure(tool_calls=None, reply="22C.")
    second = sdk.responses.create(
        model="tooled",
        input=[_output_of(call.call_id, '{"temperature": 22}')],
        conversation={"id": conversation.id},
        tools=[WEATHER],
    )
    assert second.output_text == "22C." and second.conversation.id == conversation.id
    assert [m["role"] for m in _sent(up)["messages"]] == ["user", "assistant", "tool"]
    assert _sent(up)["messages"][1]["tool_calls"][0]["id"] == call.call_id

    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [i.type for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert items[1].call_id == items[2].call_id == call.call_id

    # An output for a call the conversation does not hold is refused, naming the item.
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(
            model="tooled",
            input=[_output_of("call_unknown", "{}")],
            conversation=conversation.id,
            tools=[WEATHER],
        )
    assert refused.value.body["param"] == "input[0].call_id"
