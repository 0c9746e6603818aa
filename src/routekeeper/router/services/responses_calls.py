"""The model's function calls in a response: the chat answer's ``message.tool_calls``, or a
chat stream's ``delta.tool_calls[]`` fragments assembled (the first fragment of a call carries
its ``index``, ``id`` and ``function.name``; the ones after it pieces of
``function.arguments``), as ``function_call`` output items (ids ``fc_...``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from routekeeper.contract.ids import new_id

# A lone UTF-16 surrogate: what an upstream's JSON can carry (``"\\ud800"``) but no UTF-8
# body, stream event or retrieval can (JSON decoding joins a valid pair into one code point).
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so the output it becomes can be
    sent and stored."""
    return LONE_SURROGATE.sub("\ufffd", text)


def _text(value: Any) -> str:
    """A string of the upstream's call (its id, name or arguments) as output can carry it."""
    return unicode_text(value) if isinstance(value, str) else ""


@dataclass
class FunctionCall:
    """One call: its item id, the upstream's call id, the function's name and arguments, and
    its place in the response's output."""

    output_index: int
    call_id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    item_id: str = field(default_factory=lambda: new_id("fc"))

    def item(self, status: str) -> dict[str, Any]:
        """The ``function_call`` output item (OpenAI's ``ResponseFunctionToolCall``)."""
        return {
            "id": self.item_id,
            "type": "function_call",
            "status": status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": "".join(self.arguments),
        }


def answered_calls(message: Any, first_index: int) -> list[FunctionCall]:
    """The function calls of a chat answer's message (other kinds of tool call are not
    function calls and are left out), numbered from ``first_index`` in the output."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    found: list[FunctionCall] = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        found.append(
            FunctionCall(
                first_index + len(found),
                _text(call.get("id")) or new_id("call"),
                _text(function.get("name")),
                [_text(function.get("arguments"))],
            )
        )
    return found


@dataclass
class StreamedCalls:
    """The calls of a chat stream, assembled from its fragments in order of arrival."""

    calls: list[FunctionCall] = field(default_factory=list)
    by_index: dict[int, FunctionCall] = field(default_factory=dict)

    def fragment(self, fragment: Any, next_output: int) -> tuple[FunctionCall | None, bool, str]:
        """Take one ``delta.tool_calls[]`` entry: the call it belongs to (None when it is
        not a function call's fragment), whether this fragment started it (it is placed at
        ``next_output``), and the piece of arguments it adds."""
        if not isinstance(fragment, dict):
            return None, False, ""
        index = fragment.get("index", len(self.calls))
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        if not isinstance(index, int):
            return None, False, ""
        call = self.by_index.get(index)
        started = call is None
        if call is None:
            call = FunctionCall(next_output, _text(fragment.get("id")) or new_id("call"))
            self.calls.append(call)
            self.by_index[index] = call
        call.name += _text(function.get("name"))
        piece = _text(function.get("arguments"))
        if piece:
            call.arguments.append(piece)
        return call, started, piece
