"""Stored Responses items as chat messages, and a chat stream's tool-call fragments assembled
into function calls: the pure parts of function tools, without a server."""

import pytest

from routekeeper.contract.errors import InvalidRequest
from routekeeper.router.services.responses_calls import StreamedCalls, answered_calls
from routekeeper.router.services.responses_chat import chat_messages
from routekeeper.router.services.responses_request import input_items
from routekeeper.router.services.responses_tools import check_call_ids


def _call(call_id: str, name: str = "f", arguments: str = "{}") -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def _result(call_id: str, output: str) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def test_consecutive_calls_are_one_assistant_message_and_outputs_tool_messages():
    items = input_items(
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "Looking."},
            _call("a"),
            _call("b", "g", '{"x": 1}'),
            _result("a", "1"),
            _result("b", "2"),
            _call("c"),
            _result("c", "3"),
            {"role": "user", "content": "thanks"},
        ]
    )
    assert chat_messages(items) == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"x": 1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": "2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "3"},
        {"role": "user", "content": "thanks"},
    ]


def test_calls_after_a_user_message_start_their_own_assistant_message():
    messages = chat_messages(input_items([{"role": "user", "content": "go"}, _call("a")]))
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] is None


def test_an_output_needs_an_earlier_call():
    check_call_ids({"a"}, [_result("a", "x"), _call("b"), _result("b", "y")])
    with pytest.raises(InvalidRequest) as refused:
        check_call_ids({"a"}, [_result("b", "y"), _call("b")])
    assert refused.value.param == "input[0].call_id"


def test_stream_fragments_assemble_into_calls():
    calls = StreamedCalls()
    first = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get"}}
    call, started, piece = calls.fragment(first, 1)
    assert started and piece == "" and call.output_index == 1 and call.call_id == "call_a"
    assert calls.fragment({"index": 0, "function": {"arguments": '{"a"'}}, 2)[2] == '{"a"'
    calls.fragment({"index": 1, "function": {"name": "put", "arguments": "{}"}}, 2)
    calls.fragment({"index": 0, "function": {"arguments": ": 1}"}}, 3)
    assert calls.fragment("junk", 3) == (None, False, "")
    assert [c.item("completed") for c in calls.calls] == [
        {
            "id": calls.calls[0].item_id,
            "type": "function_call",
            "status": "completed",
            "call_id": "call_a",
            "name": "get",
            "arguments": '{"a": 1}',
        },
        {
            "id": calls.calls[1].item_id,
            "type": "function_call",
            "status": "completed",
            "call_id": calls.calls[1].call_id,  # the upstream sent none: one is made
            "name": "put",
            "arguments": "{}",
        },
    ]
    assert calls.calls[1].output_index == 2 and calls.calls[1].call_id.startswith("call_")
    assert all(c.item_id.startswith("fc_") for c in calls.calls)


def test_an_answer_keeps_only_function_calls():
    message = {
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "custom", "custom": {"name": "g", "input": "x"}},
            "junk",
        ]
    }
    calls = answered_calls(message, 1)
    assert [(c.call_id, c.name, c.output_index) for c in calls] == [("c1", "f", 1)]
    assert answered_calls(None, 0) == []
