"""Function tools on the Responses API: the ``tools``, ``tool_choice`` and
``parallel_tool_calls`` create fields (checked, echoed, and translated to the chat backend's
fields of the same names), the two tool item types of an input (``function_call``: a call
the model made, sent back as context; ``function_call_output``: its result), and what those
items become in the chat format (an assistant message's ``tool_calls``, a ``tool`` message).

Only function tools exist here: a hosted tool (``web_search``, ``file_search``, ``mcp``, ...)
is refused, a 400 naming ``tools[i].type``, since no upstream chat backend runs it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from routekeeper.contract.strict_json import json_kind
from routekeeper.router.services.request_checks import an_object as _object
from routekeeper.router.services.request_checks import fail as _fail
from routekeeper.router.services.request_checks import refused as _refused
from routekeeper.router.services.request_checks import string as _string

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_CHOICES = ("auto", "none", "required")
CALL_STATUSES = ("in_progress", "completed", "incomplete")
CALL_ID_MAX = 512
FUNCTION_TOOL_KEYS = ("type", "name", "description", "parameters", "strict")
# Options of OpenAI's function tool that only its own hosted runtime acts on.
UNSUPPORTED_TOOL_KEYS = ("allowed_callers", "async", "defer_loading", "output_schema")
CALL_KEYS = ("type", "id", "call_id", "name", "arguments", "status")
OUTPUT_KEYS = ("type", "id", "call_id", "output", "status")
# Attribution fields of tool items that only OpenAI's hosted runtime fills in.
HOSTED_ITEM_KEYS = ("namespace", "caller", "created_by", "async")


def _name(value: Any, param: str) -> str:
    name = _string(value, param)
    if not FUNCTION_NAME.match(name):
        raise _fail(param, "must be 1-64 letters, digits, _ or -")
    return name


def _keys(item: Mapping[str, Any], at: str, allowed: tuple[str, ...]) -> None:
    for key, value in item.items():
        if key in allowed:
            continue
        if key in HOSTED_ITEM_KEYS or key in UNSUPPORTED_TOOL_KEYS:
            if value is None:
                continue
            raise _refused(f"{at}.{key}", "only plain function tools")
        raise _fail(f"{at}.{key}", "unknown parameter")


# -- the create fields ----------------------------------------------------------------------


def tool_fields(given: Mapping[str, Any], echo: dict[str, Any], upstream: dict[str, Any]) -> None:
    """Check ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (already a boolean or
    None) of a create body: what the response echoes goes in ``echo``, the chat fields in
    ``upstream`` (``tool_choice`` and ``parallel_tool_calls`` only with tools, which chat
    backends require). Raises InvalidRequest naming the field."""
    echo_tools, chat_tools = function_tools(given.get("tools"))
    names = {tool["name"] for tool in echo_tools}
    echo["tools"] = echo_tools
    echo["tool_choice"], chat_choice = tool_choice(given.get("tool_choice"), names)
    if chat_tools:
        upstream["tools"] = chat_tools
        if "tool_choice" in given:
            upstream["tool_choice"] = chat_choice
        if given.get("parallel_tool_calls") is not None:
            upstream["parallel_tool_calls"] = given["parallel_tool_calls"]


def function_tools(value: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tools as the response echoes them (OpenAI's ``FunctionTool``) and as chat tools."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise _fail("tools", f"must be an array, got {json_kind(value)}")
    echoed: list[dict[str, Any]] = []
    chat: list[dict[str, Any]] = []
    for i, tool in enumerate(value):
        at = f"tools[{i}]"
        tool = _object(tool, at)
        kind = tool.get("type")
        if kind != "function":
            if not isinstance(kind, str):
                raise _fail(f"{at}.type", f"is required (a string), got {json_kind(kind)}")
            raise _refused(f"{at}.type", f"{kind!r} tools; only 'function' tools")
        _keys(tool, at, FUNCTION_TOOL_KEYS)
        name = _name(tool.get("name"), f"{at}.name")
        if any(t["name"] == name for t in echoed):
            raise _fail(f"{at}.name", f"names a function already in tools: {name!r}")
        description = tool.get("description")
        if description is not None:
            _string(description, f"{at}.description")
        parameters = tool.get("parameters")
        if parameters is not None:
            _object(parameters, f"{at}.parameters")
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _fail(f"{at}.strict", f"must be true or false, got {json_kind(strict)}")
        echoed.append(
            {
                "type": "function",
                "name": name,
                "description": description,
                "parameters": parameters,
                "strict": strict,
            }
        )
        function = {
            "name": name,
            "description": description,
            "parameters": parameters,
            "strict": strict,
        }
        chat.append(
            {"type": "function", "function": {k: v for k, v in function.items() if v is not None}}
        )
    return echoed, chat


def tool_choice(value: Any, names: set[str]) -> tuple[Any, Any]:
    """The tool choice as echoed and as chat's ``tool_choice``."""
    if value is None:
        return "auto", "auto"
    if isinstance(value, str):
        if value not in TOOL_CHOICES:
            raise _fail(
                "tool_choice",
                f"must be one of {', '.join(repr(c) for c in TOOL_CHOICES)} or an object, "
                f"got {value!r}",
            )
        if value == "required" and not names:
            raise _fail("tool_choice", "'required' needs at least one function in tools")
        return value, value
    choice = _object(value, "tool_choice")
    kind = choice.get("type")
    if kind != "function":
        if not isinstance(kind, str):
            raise _fail("tool_choice.type", f"is required (a string), got {json_kind(kind)}")
        raise _refused("tool_choice.type", f"{kind!r}; only 'function' tools can be chosen")
    for key in choice:
        if key not in ("type", "name"):
            raise _fail(f"tool_choice.{key}", "unknown parameter")
    name = _string(choice.get("name"), "tool_choice.name")
    if name not in names:
        raise _fail("tool_choice.name", f"names no function in tools: {name!r}")
    return {"type": "function", "name": name}, {"type": "function", "function": {"name": name}}


# -- input items ----------------------------------------------------------------------------


def tool_item(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    """A ``function_call`` or ``function_call_output`` input item in the stored shape
    (without its id: the server gives every stored item its own)."""
    kind = item.get("type")
    status = item.get("status")
    if status is not None and status not in CALL_STATUSES:
        raise _fail(f"{at}.status", f"must be one of {', '.join(CALL_STATUSES)}, got {status!r}")
    call_id = _string(item.get("call_id"), f"{at}.call_id", max_len=CALL_ID_MAX)
    if not call_id:
        raise _fail(f"{at}.call_id", "must not be empty")
    if kind == "function_call":
        _keys(item, at, CALL_KEYS)
        return {
            "type": "function_call",
            "status": status or "completed",
            "call_id": call_id,
            "name": _name(item.get("name"), f"{at}.name"),
            "arguments": _string(item.get("arguments"), f"{at}.arguments"),
        }
    _keys(item, at, OUTPUT_KEYS)
    return {
        "type": "function_call_output",
        "status": status or "completed",
        "call_id": call_id,
        "output": _output(item.get("output"), f"{at}.output"),
    }


def _output(value: Any, at: str) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _fail(at, f"must be a string or an array, got {json_kind(value)}")
    parts = []
    for j, part in enumerate(value):
        part = _object(part, f"{at}[{j}]")
        if part.get("type") in ("input_image", "input_file"):
            raise _refused(f"{at}[{j}].type", "a function's output is text only")
        if part.get("type") != "input_text":
            raise _fail(f"{at}[{j}].type", f"must be 'input_text', got {part.get('type')!r}")
        parts.append({"type": "input_text", "text": _string(part.get("text"), f"{at}[{j}].text")})
    return parts


def called_ids(messages: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ids of the tool calls of a context's assistant messages."""
    return {call["id"] for m in messages for call in m.get("tool_calls") or ()}


def check_call_ids(calls: Iterable[str], new: Sequence[Mapping[str, Any]]) -> None:
    """Every ``function_call_output`` of the new input answers a call of the context before
    it (``calls``: their ids) or of the input before it (a chat backend refuses a ``tool``
    message that follows no call)."""
    known = set(calls)
    for n, item in enumerate(new):
        if item.get("type") == "function_call":
            known.add(item["call_id"])
        elif item.get("type") == "function_call_output" and item["call_id"] not in known:
            raise _fail(
                f"input[{n}].call_id",
                f"no function_call with call_id {item['call_id']!r} comes before this output",
            )


# -- the published schema -------------------------------------------------------------------


def tool_schemas() -> dict[str, Any]:
    """JSON schemas of the create body's tool fields and tool input items (OpenAPI)."""
    call_id = {"type": "string", "minLength": 1, "maxLength": CALL_ID_MAX}
    name = {"type": "string", "pattern": FUNCTION_NAME.pattern}
    status = {"enum": [*CALL_STATUSES, None]}
    function = {
        "type": "object",
        "required": ["type", "name"],
        "properties": {
            "type": {"enum": ["function"]},
            "name": name,
            "description": {"type": ["string", "null"]},
            "parameters": {"type": ["object", "null"]},
            "strict": {"type": ["boolean", "null"]},
        },
    }
    return {
        "tools": {"type": ["array", "null"], "items": function},
        "tool_choice": {
            "anyOf": [
                {"enum": [*TOOL_CHOICES, None]},
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {"type": {"enum": ["function"]}, "name": {"type": "string"}},
                },
            ]
        },
        "function_call": {
            "type": "object",
            "required": ["type", "call_id", "name", "arguments"],
            "properties": {
                "type": {"enum": ["function_call"]},
                "call_id": call_id,
                "name": name,
                "arguments": {"type": "string"},
                "status": status,
            },
        },
        "function_call_output": {
            "type": "object",
            "required": ["type", "call_id", "output"],
            "properties": {
                "type": {"enum": ["function_call_output"]},
                "call_id": call_id,
                "output": {"type": "string"},
                "status": status,
            },
        },
    }
