"""The Chat Completions create request: what routekeeper checks before routing, and the JSON
schema it publishes for it (both from the tables below, so they cannot disagree).

The fields the official SDK sends are checked by type and range; a problem is an
``InvalidRequest`` whose ``param`` names the field as OpenAI does (``messages[0].role``,
``stream_options.include_usage``). Fields routekeeper does not know pass through unchecked
(upstreams add their own). ``null`` is the same as leaving an optional field out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.strict_json import json_kind

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Content part types each role may send (a string is always allowed, except where noted).
PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": (),
}
# name: (minimum, maximum, integers only)
NUMBERS: dict[str, tuple[float | None, float | None, bool]] = {
    "temperature": (0, 2, False),
    "top_p": (0, 1, False),
    "presence_penalty": (-2, 2, False),
    "frequency_penalty": (-2, 2, False),
    "max_tokens": (1, None, True),
    "max_completion_tokens": (1, None, True),
    "n": (1, 128, True),
    "top_logprobs": (0, 20, True),
    "seed": (-(2**63), 2**63 - 1, True),
}
BOOLEANS = ("stream", "logprobs", "parallel_tool_calls", "store")
STRINGS = ("user", "reasoning_effort", "service_tier", "prompt_cache_key", "safety_identifier")
MODEL_MAX = 256
METADATA_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512
STOP_MAX = 4
TOOL_CHOICES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
IMAGE_DETAILS = ("auto", "low", "high")
AUDIO_FORMATS = ("wav", "mp3")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _one_of(options: tuple[str, ...]) -> str:
    return ", ".join(repr(o) for o in options)


def _string(value: Any, param: str, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise _fail(param, f"must be a string, got {json_kind(value)}")


def _object(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(param, f"must be an object, got {json_kind(value)}")
    return value


def _boolean(value: Any, param: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise _fail(param, f"must be true or false, got {json_kind(value)}")


def _number(value: Any, param: str, low: float | None, high: float | None, integer: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        want = "an integer" if integer else "a number"
        raise _fail(param, f"must be {want}, got {json_kind(value)}")
    if integer and not isinstance(value, int):
        raise _fail(param, f"must be an integer, got {value!r}")
    if low is not None and value < low:
        raise _fail(param, f"must be at least {low:g}, got {value!r}")
    if high is not None and value > high:
        raise _fail(param, f"must be at most {high:g}, got {value!r}")


def validate_chat_request(body: Any) -> dict[str, Any]:
    """Check a decoded request body; returns it (a dict) or raises InvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {json_kind(body)}")
    if "model" not in body:
        raise _fail("model", "is required")
    _string(body["model"], "model")
    if not 1 <= len(body["model"]) <= MODEL_MAX:
        raise _fail("model", f"must be 1 to {MODEL_MAX} characters")
    messages = body.get("messages")
    if messages is None:
        raise _fail("messages", "is required")
    if not isinstance(messages, list) or not messages:
        raise _fail("messages", f"must be a non-empty array, got {json_kind(messages)}")
    for i, message in enumerate(messages):
        _message(message, f"messages[{i}]")
    for name in BOOLEANS:
        _boolean(body.get(name), name)
    for name, (low, high, integer) in NUMBERS.items():
        _number(body.get(name), name, low, high, integer)
    for name in STRINGS:
        _string(body.get(name), name, required=False)
    _stream_options(body)
    _stop(body.get("stop"))
    _metadata(body.get("metadata"))
    _logit_bias(body.get("logit_bias"))
    _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"))
    _response_format(body.get("response_format"))
    return body


def _message(message: Any, at: str) -> None:
    message = _object(message, at)
    role = message.get("role")
    if role is None:
        raise _fail(f"{at}.role", "is required")
    if role not in ROLES:
        raise _fail(f"{at}.role", f"must be one of {_one_of(ROLES)}, got {role!r}")
    _string(message.get("name"), f"{at}.name", required=role == "function")
    content = message.get("content")
    if role == "assistant":
        calls = message.get("tool_calls")
        if calls is not None:
            _tool_calls(calls, f"{at}.tool_calls")
        if content is None and calls is None and message.get("function_call") is None:
            if message.get("audio") is None:
                raise _fail(f"{at}.content", "is required unless tool_calls or function_call is")
            return
    elif role == "function":
        _string(content, f"{at}.content", required=False)
        return
    elif content is None:
        raise _fail(f"{at}.content", "is required")
    if role == "tool":
        _string(message.get("tool_call_id"), f"{at}.tool_call_id")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _fail(
            f"{at}.content", f"must be a string or an array of parts, got {json_kind(content)}"
        )
    for j, part in enumerate(content):
        _part(part, f"{at}.content[{j}]", PART_TYPES[role])


def _part(part: Any, at: str, allowed: tuple[str, ...]) -> None:
    part = _object(part, at)
    kind = part.get("type")
    if kind not in allowed:
        raise _fail(f"{at}.type", f"must be one of {_one_of(allowed)} here, got {kind!r}")
    if kind == "text":
        _string(part.get("text"), f"{at}.text")
    elif kind == "refusal":
        _string(part.get("refusal"), f"{at}.refusal")
    elif kind == "image_url":
        image = _object(part.get("image_url"), f"{at}.image_url")
        _string(image.get("url"), f"{at}.image_url.url")
        detail = image.get("detail")
        if detail is not None and detail not in IMAGE_DETAILS:
            raise _fail(f"{at}.image_url.detail", f"must be one of {_one_of(IMAGE_DETAILS)}")
    elif kind == "input_audio":
        audio = _object(part.get("input_audio"), f"{at}.input_audio")
        _string(audio.get("data"), f"{at}.input_audio.data")
        if audio.get("format") not in AUDIO_FORMATS:
            raise _fail(f"{at}.input_audio.format", f"must be one of {_one_of(AUDIO_FORMATS)}")
    elif kind == "file":
        file = _object(part.get("file"), f"{at}.file")
        for key in ("file_data", "file_id", "filename"):
            _string(file.get(key), f"{at}.file.{key}", required=False)


def _tool_calls(calls: Any, at: str) -> None:
    if not isinstance(calls, list):
        raise _fail(at, f"must be an array, got {json_kind(calls)}")
    for k, call in enumerate(calls):
        call = _object(call, f"{at}[{k}]")
        _string(call.get("id"), f"{at}[{k}].id")
        if call.get("type") == "function":
            function = _object(call.get("function"), f"{at}[{k}].function")
            _string(function.get("name"), f"{at}[{k}].function.name")
            _string(function.get("arguments"), f"{at}[{k}].function.arguments")
        else:
            _string(call.get("type"), f"{at}[{k}].type")


def _stream_options(body: Mapping[str, Any]) -> None:
    options = body.get("stream_options")
    if options is None:
        return
    options = _object(options, "stream_options")
    if body.get("stream") is not True:
        raise _fail("stream_options", "is only allowed when stream is true")
    _boolean(options.get("include_usage"), "stream_options.include_usage")


def _stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or len(stop) > STOP_MAX:
        raise _fail("stop", f"must be a string or an array of at most {STOP_MAX} strings")
    for i, item in enumerate(stop):
        _string(item, f"stop[{i}]")


def _metadata(metadata: Any) -> None:
    if metadata is None:
        return
    metadata = _object(metadata, "metadata")
    if len(metadata) > METADATA_PAIRS:
        raise _fail("metadata", f"may hold at most {METADATA_PAIRS} pairs")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX:
            raise _fail("metadata", f"keys are at most {METADATA_KEY_MAX} characters")
        _string(value, f"metadata.{key}")
        if len(value) > METADATA_VALUE_MAX:
            raise _fail(f"metadata.{key}", f"must be at most {METADATA_VALUE_MAX} characters")


def _logit_bias(bias: Any) -> None:
    if bias is None:
        return
    for token, value in _object(bias, "logit_bias").items():
        _number(value, f"logit_bias.{token}", -100, 100, True)


def _tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _fail("tools", f"must be an array, got {json_kind(tools)}")
    for i, tool in enumerate(tools):
        tool = _object(tool, f"tools[{i}]")
        _string(tool.get("type"), f"tools[{i}].type")
        if tool["type"] != "function":
            continue
        function = _object(tool.get("function"), f"tools[{i}].function")
        name = function.get("name")
        _string(name, f"tools[{i}].function.name")
        if not FUNCTION_NAME.match(str(name)):
            raise _fail(f"tools[{i}].function.name", "must be 1 to 64 letters, digits, '_' or '-'")
        _string(function.get("description"), f"tools[{i}].function.description", required=False)
        if function.get("parameters") is not None:
            _object(function["parameters"], f"tools[{i}].function.parameters")
        _boolean(function.get("strict"), f"tools[{i}].function.strict")


def _tool_choice(choice: Any) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise _fail("tool_choice", f"must be one of {_one_of(TOOL_CHOICES)} or an object")
        return
    _string(_object(choice, "tool_choice").get("type"), "tool_choice.type")


def _response_format(fmt: Any) -> None:
    if fmt is None:
        return
    kind = _object(fmt, "response_format").get("type")
    if kind not in RESPONSE_FORMATS:
        raise _fail("response_format.type", f"must be one of {_one_of(RESPONSE_FORMATS)}")
    if kind == "json_schema":
        schema = _object(fmt.get("json_schema"), "response_format.json_schema")
        _string(schema.get("name"), "response_format.json_schema.name")


# -- the published schema -------------------------------------------------------------------


def _content_schema(role: str) -> dict[str, Any]:
    parts: dict[str, dict[str, Any]] = {
        "text": {"text": {"type": "string"}},
        "refusal": {"refusal": {"type": "string"}},
        "image_url": {
            "image_url": {
                "type": "object",
                "properties": {
                    "url": {"type": "string"},
                    "detail": {"enum": list(IMAGE_DETAILS)},
                },
                "required": ["url"],
            }
        },
        "input_audio": {
            "input_audio": {
                "type": "object",
                "properties": {"data": {"type": "string"}, "format": {"enum": list(AUDIO_FORMATS)}},
                "required": ["data", "format"],
            }
        },
        "file": {"file": {"type": "object"}},
    }
    if not PART_TYPES[role]:
        return {"type": ["string", "null"]}
    items = [
        {
            "type": "object",
            "properties": {"type": {"const": kind}, **parts[kind]},
            "required": ["type", *parts[kind]],
        }
        for kind in PART_TYPES[role]
    ]
    return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"anyOf": items}}]}


def chat_request_schema() -> dict[str, Any]:
    """The JSON schema of the request body (published in the OpenAPI document)."""
    messages = []
    for role in ROLES:
        required = ["role"]
        if role not in ("assistant", "function"):
            required.append("content")
        if role == "tool":
            required.append("tool_call_id")
        if role == "function":
            required.append("name")
        properties: dict[str, Any] = {
            "role": {"const": role},
            "content": _content_schema(role),
            "name": {"type": "string"},
        }
        if role == "tool":
            properties["tool_call_id"] = {"type": "string"}
        if role == "assistant":
            # content may be null only with tool_calls; the schema keeps content required
            # here so that generated examples are valid.
            required.append("content")
        messages.append({"type": "object", "properties": properties, "required": required})
    properties = {
        "model": {"type": "string", "minLength": 1, "maxLength": MODEL_MAX},
        "messages": {"type": "array", "minItems": 1, "items": {"anyOf": messages}},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": ["boolean", "null"]}},
        },
        "stop": {
            "anyOf": [
                {"type": ["string", "null"]},
                {"type": "array", "items": {"type": "string"}, "maxItems": STOP_MAX},
            ]
        },
        "metadata": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX},
            "maxProperties": METADATA_PAIRS,
            "propertyNames": {"maxLength": METADATA_KEY_MAX},
        },
    }
    for name in BOOLEANS:
        properties[name] = {"type": ["boolean", "null"]}
    for name in STRINGS:
        properties[name] = {"type": ["string", "null"]}
    for name, (low, high, integer) in NUMBERS.items():
        number: dict[str, Any] = {"type": ["integer" if integer else "number", "null"]}
        if low is not None:
            number["minimum"] = low
        if high is not None:
            number["maximum"] = high
        properties[name] = number
    return {
        "type": "object",
        "properties": properties,
        "required": ["model", "messages"],
        # stream_options only with stream: true
        "if": {
            "required": ["stream_options"],
            "properties": {"stream_options": {"type": "object"}},
        },
        "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
        "additionalProperties": True,
        "description": "OpenAI's Chat Completions create body; unknown fields pass through.",
    }
