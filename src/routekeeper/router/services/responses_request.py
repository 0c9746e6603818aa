"""The Responses create request: every field of OpenAI's create parameters sorted into what
routekeeper honours, forwards to the upstream, ignores or refuses (:data:`CREATE_FIELDS`, the
README's table is this one), the checks (a 400 naming ``param`` as OpenAI does:
``input[0].content[1].image_url``), and the items and chat messages the input becomes.

``null`` is the same as leaving an optional field out. A field that is not in the table is
refused: routekeeper never drops a parameter it does not know silently."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.strict_json import json_kind
from routekeeper.router.services.request_checks import an_object as _object
from routekeeper.router.services.request_checks import fail as _fail
from routekeeper.router.services.request_checks import refused as _refused
from routekeeper.router.services.request_checks import string as _string
from routekeeper.router.services.responses_chat import chat_message as chat_message
from routekeeper.router.services.responses_chat import chat_messages as chat_messages
from routekeeper.router.services.responses_tools import tool_fields, tool_item, tool_schemas
from routekeeper.storage.types import INT32_MAX


class Handling(enum.StrEnum):
    HONOURED = "honoured"
    FORWARDED = "forwarded"
    IGNORED = "ignored"
    REFUSED = "refused"


CREATE_FIELDS: dict[str, tuple[Handling, str]] = {
    "model": (Handling.HONOURED, "a configured model, or an auto name that routes like chat"),
    "input": (
        Handling.HONOURED,
        "a string, or items: messages (input_text, input_image URL or data URL, assistant "
        "output_text), function_call and function_call_output",
    ),
    "instructions": (Handling.HONOURED, "a system message first; not carried over"),
    "previous_response_id": (Handling.HONOURED, "the whole stored chain is the context"),
    "store": (Handling.HONOURED, "default true; false stores nothing (replay still records)"),
    "stream": (Handling.HONOURED, "the Responses event stream"),
    "metadata": (Handling.HONOURED, "stored and echoed (16 keys, 64/512 characters)"),
    "max_output_tokens": (Handling.HONOURED, "sent as max_completion_tokens"),
    "tools": (
        Handling.HONOURED,
        "function tools sent as chat tools; the model's calls are function_call items; "
        "hosted tools are refused",
    ),
    "tool_choice": (
        Handling.HONOURED,
        "`auto`, `none`, `required` or a function of tools, sent as chat's tool_choice",
    ),
    "parallel_tool_calls": (Handling.HONOURED, "sent as is with tools; echoed (default true)"),
    "temperature": (Handling.HONOURED, "sent as is"),
    "top_p": (Handling.HONOURED, "sent as is"),
    "text": (Handling.HONOURED, "text.format sent as response_format, verbosity as is"),
    "reasoning": (
        Handling.HONOURED,
        "reasoning.effort sent as reasoning_effort; a summary is refused",
    ),
    "truncation": (
        Handling.IGNORED,
        "echoed; `auto` is treated as `disabled`: the whole context is sent and the upstream's "
        "context limit applies",
    ),
    "background": (Handling.REFUSED, "true is refused (no background responses); false is fine"),
    "conversation": (
        Handling.HONOURED,
        "an id or {id}: its items come first, the finished turn is appended; not with "
        "previous_response_id or store: false",
    ),
    "prompt": (Handling.REFUSED, "no stored prompt templates"),
    "include": (Handling.REFUSED, "no extra output data; an empty list is fine"),
    "top_logprobs": (Handling.REFUSED, "no log probabilities"),
    "context_management": (Handling.REFUSED, "no server-side compaction"),
    "background_options": (Handling.REFUSED, "no background responses"),
    "moderation": (Handling.REFUSED, "no moderation"),
    "image": (Handling.REFUSED, "no image context options"),
    "access_programs": (Handling.REFUSED, "no access programs"),
    "prompt_cache_options": (
        Handling.REFUSED,
        "no prompt cache options; prompt_cache_key is forwarded",
    ),
    "service_tier": (Handling.FORWARDED, "sent as is, echoed as sent"),
    "user": (Handling.FORWARDED, "sent as is, echoed as sent"),
    "safety_identifier": (Handling.FORWARDED, "sent as is, echoed as sent"),
    "prompt_cache_key": (Handling.FORWARDED, "sent as is, echoed as sent"),
    "prompt_cache_retention": (Handling.FORWARDED, "sent as is, echoed as sent"),
    "max_tool_calls": (
        Handling.IGNORED,
        "echoed; it bounds calls of hosted tools, and there are none (function calls are "
        "returned to the client, never run here)",
    ),
    "stream_options": (Handling.IGNORED, "include_obfuscation: no obfuscation is added"),
}

ROLES = ("user", "assistant", "system", "developer")
ITEM_KEYS = ("type", "role", "content", "id", "status", "phase")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
CACHE_RETENTIONS = ("in_memory", "24h")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
VERBOSITIES = ("low", "medium", "high")
IMAGE_DETAILS = ("auto", "low", "high")
FORMAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MODEL_MAX, METADATA_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 256, 16, 64, 512
STRING_MAX = 512  # user, safety_identifier, prompt_cache_key


def _choice(value: Any, param: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise _fail(param, f"must be one of {', '.join(repr(o) for o in options)}, got {value!r}")
    return str(value)


def _boolean(value: Any, param: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _fail(param, f"must be true or false, got {json_kind(value)}")
    return value


def _number(value: Any, param: str, low: float, high: float, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(
            param, f"must be {'an integer' if integer else 'a number'}, got {json_kind(value)}"
        )
    if integer and not isinstance(value, int):
        raise _fail(param, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise _fail(param, f"must be between {low:g} and {high:g}, got {value!r}")
    return value


@dataclass
class ResponseRequest:
    """A checked create request: ``items`` are the new input items (OpenAI's shape, without
    ids), ``echo`` the fields the response object repeats, ``upstream`` the chat fields sent
    with the messages."""

    model: str
    items: list[dict[str, Any]]
    instructions: str | None
    previous_response_id: str | None
    store: bool
    stream: bool
    echo: dict[str, Any] = field(default_factory=dict)
    upstream: dict[str, Any] = field(default_factory=dict)


def parse_request(body: Any) -> ResponseRequest:
    """Check a decoded body (400 naming the field) and sort its fields."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {json_kind(body)}")
    for name in body:
        if name not in CREATE_FIELDS:
            raise _fail(name, "unknown parameter")
    given = {k: v for k, v in body.items() if v is not None}
    for name, value in given.items():
        handling, why = CREATE_FIELDS[name]
        if handling is Handling.REFUSED and not _harmless(name, value):
            raise _refused(name, why)
    if "model" not in given:
        raise _fail("model", "is required")
    model = _string(given["model"], "model", max_len=MODEL_MAX)
    if not model:
        raise _fail("model", "must not be empty")
    if "input" not in given:
        raise _fail("input", "is required")
    items = input_items(given["input"])
    instructions = given.get("instructions")
    if instructions is not None:
        _string(instructions, "instructions")
    previous = given.get("previous_response_id")
    if previous is not None:
        _string(previous, "previous_response_id")
    store = _boolean(given.get("store"), "store")
    stream = _boolean(given.get("stream"), "stream")
    _boolean(given.get("background"), "background")
    parallel = _boolean(given.get("parallel_tool_calls"), "parallel_tool_calls")
    request = ResponseRequest(
        model, items, instructions, previous, store is not False, bool(stream)
    )
    echo, upstream = request.echo, request.upstream
    echo["metadata"] = _metadata(given.get("metadata"))
    echo["parallel_tool_calls"] = True if parallel is None else parallel
    for name, low, high, integer in (
        ("temperature", 0, 2, False),
        ("top_p", 0, 1, False),
        ("max_output_tokens", 1, INT32_MAX, True),
        ("max_tool_calls", 0, INT32_MAX, True),
    ):
        value = _number(given.get(name), name, low, high, integer=integer)
        echo[name] = value
        if value is not None and name != "max_tool_calls":
            upstream["max_completion_tokens" if name == "max_output_tokens" else name] = value
    echo["truncation"] = _choice(
        given.get("truncation", "disabled"), "truncation", ("auto", "disabled")
    )
    echo["text"] = _text(given.get("text"), upstream)
    echo["reasoning"] = _reasoning(given.get("reasoning"), upstream)
    for name, options in (
        ("service_tier", SERVICE_TIERS),
        ("prompt_cache_retention", CACHE_RETENTIONS),
    ):
        if name in given:
            upstream[name] = echo[name] = _choice(given[name], name, options)
        else:
            echo[name] = None
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        if name in given:
            upstream[name] = echo[name] = _string(given[name], name, max_len=STRING_MAX)
        else:
            echo[name] = None
    stream_options = given.get("stream_options")
    if stream_options is not None:
        _boolean(
            _object(stream_options, "stream_options").get("include_obfuscation"),
            "stream_options.include_obfuscation",
        )
    tool_fields(given, echo, upstream)
    echo["store"] = request.store
    return request


def _harmless(name: str, value: Any) -> bool:
    """A refused field whose value asks for nothing routekeeper cannot do."""
    if name == "background":
        return value is False
    return name == "include" and value == []


def metadata_of(metadata: Any) -> dict[str, str]:
    """``metadata`` as OpenAI allows it (16 keys, 64/512 characters): a 400 naming it."""
    return _metadata(metadata)


def _metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    metadata = _object(metadata, "metadata")
    if len(metadata) > METADATA_PAIRS:
        raise _fail("metadata", f"must have at most {METADATA_PAIRS} keys, got {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX:
            raise _fail(
                "metadata", f"keys must be at most {METADATA_KEY_MAX} characters, got {len(key)}"
            )
        _string(value, f"metadata.{key}", max_len=METADATA_VALUE_MAX)
    return dict(metadata)


def _text(text: Any, upstream: dict[str, Any]) -> dict[str, Any]:
    if text is None:
        return {"format": {"type": "text"}}
    text = _object(text, "text")
    for key in text:
        if key not in ("format", "verbosity"):
            raise _fail(f"text.{key}", "unknown parameter")
    echo: dict[str, Any] = {"format": {"type": "text"}}
    if text.get("verbosity") is not None:
        upstream["verbosity"] = echo["verbosity"] = _choice(
            text["verbosity"], "text.verbosity", VERBOSITIES
        )
    fmt = text.get("format")
    if fmt is None:
        return echo
    fmt = _object(fmt, "text.format")
    kind = _choice(fmt.get("type"), "text.format.type", ("text", "json_object", "json_schema"))
    if kind == "json_schema":
        name = _string(fmt.get("name"), "text.format.name")
        if not FORMAT_NAME.match(name):
            raise _fail("text.format.name", "must be 1-64 letters, digits, _ or -")
        schema = _object(fmt.get("schema"), "text.format.schema")
        strict = _boolean(fmt.get("strict"), "text.format.strict")
        description = fmt.get("description")
        if description is not None:
            _string(description, "text.format.description")
        echo["format"] = {
            "type": kind,
            "name": name,
            "schema": schema,
            "strict": strict,
            "description": description,
        }
        upstream["response_format"] = {
            "type": kind,
            "json_schema": {
                k: v for k, v in echo["format"].items() if k != "type" and v is not None
            },
        }
    else:
        echo["format"] = {"type": kind}
        upstream["response_format"] = {"type": kind}
    return echo


def _reasoning(reasoning: Any, upstream: dict[str, Any]) -> dict[str, Any]:
    if reasoning is None:
        return {"effort": None, "summary": None}
    reasoning = _object(reasoning, "reasoning")
    for key, value in reasoning.items():
        if key in ("summary", "generate_summary") and value is not None:
            raise _refused(f"reasoning.{key}", "no reasoning summaries")
        if key not in ("effort", "summary", "generate_summary"):
            raise _fail(f"reasoning.{key}", "unknown parameter")
    effort = reasoning.get("effort")
    if effort is not None:
        upstream["reasoning_effort"] = _choice(effort, "reasoning.effort", EFFORTS)
    return {"effort": effort, "summary": None}


def input_items(value: Any, param: str = "input") -> list[dict[str, Any]]:
    """The input as message items in OpenAI's stored shape (without ids); errors name
    ``param`` (``input[2].content[0].text``; ``items[...]`` for a conversation's items)."""
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list) or not value:
        raise _fail(param, f"must be a string or a non-empty array, got {json_kind(value)}")
    return [_item(item, f"{param}[{i}]") for i, item in enumerate(value)]


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "role": role, "status": "completed", "content": content}


def _item(item: Any, at: str) -> dict[str, Any]:
    item = _object(item, at)
    kind = item.get("type", "message")
    if kind in ("function_call", "function_call_output"):
        return tool_item(item, at)
    if kind != "message":
        raise _refused(f"{at}.type", f"only message and function tool items, got {kind!r}")
    for key in item:
        if key not in ITEM_KEYS:
            raise _fail(f"{at}.{key}", "unknown parameter")
    role = _choice(item.get("role"), f"{at}.role", ROLES)
    content = item.get("content")
    if content is None:
        raise _fail(f"{at}.content", "is required")
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        return _message(role, [_text_part(kind, content)])
    if not isinstance(content, list):
        raise _fail(f"{at}.content", f"must be a string or an array, got {json_kind(content)}")
    parts = [_part(p, f"{at}.content[{j}]", role) for j, p in enumerate(content)]
    return _message(role, parts)


def _text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": kind, "text": text, "annotations": [], "logprobs": []}
    return {"type": kind, "text": text}


def _part(part: Any, at: str, role: str) -> dict[str, Any]:
    part = _object(part, at)
    kind = part.get("type")
    allowed = ("output_text", "refusal") if role == "assistant" else ("input_text", "input_image")
    if kind in ("input_file", "input_audio") and role != "assistant":
        raise _refused(f"{at}.type", f"{kind} parts are not supported")
    _choice(kind, f"{at}.type", allowed)
    if kind == "refusal":
        return {"type": kind, "refusal": _string(part.get("refusal"), f"{at}.refusal")}
    if kind != "input_image":
        return _text_part(kind, _string(part.get("text"), f"{at}.text"))
    if part.get("file_id") is not None:
        raise _refused(f"{at}.file_id", "no files; send image_url (a URL or a data URL)")
    url = _string(part.get("image_url"), f"{at}.image_url")
    if not url.startswith(("http://", "https://", "data:")):
        raise _fail(f"{at}.image_url", "must be an http(s) URL or a data URL")
    detail = part.get("detail")
    detail = _choice("auto" if detail is None else detail, f"{at}.detail", IMAGE_DETAILS)
    return {"type": "input_image", "image_url": url, "detail": detail, "file_id": None}


def responses_request_schema() -> dict[str, Any]:
    """The JSON schema published for the create body (OpenAPI)."""
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"enum": ["input_text", "output_text"]}, "text": {"type": "string"}},
    }
    image_part = {
        "type": "object",
        "required": ["type", "image_url"],
        "properties": {
            "type": {"enum": ["input_image"]},
            "image_url": {"type": "string"},
            "detail": {"enum": list(IMAGE_DETAILS)},
        },
    }
    refusal_part = {
        "type": "object",
        "required": ["type", "refusal"],
        "properties": {"type": {"enum": ["refusal"]}, "refusal": {"type": "string"}},
    }
    item = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "type": {"enum": ["message"]},
            "role": {"enum": list(ROLES)},
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {"anyOf": [text_part, image_part, refusal_part]},
                    },
                ]
            },
        },
    }
    tools = tool_schemas()
    string = {"type": ["string", "null"]}
    number = {"type": ["number", "null"]}
    boolean = {"type": ["boolean", "null"]}
    properties: dict[str, Any] = {name: {} for name in CREATE_FIELDS}
    properties.update(
        {
            "model": {"type": "string", "minLength": 1, "maxLength": MODEL_MAX},
            "input": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "anyOf": [item, tools["function_call"], tools["function_call_output"]]
                        },
                    },
                ]
            },
            "tools": tools["tools"],
            "tool_choice": tools["tool_choice"],
            "instructions": string,
            "previous_response_id": string,
            "conversation": {"anyOf": [{"type": ["string", "null"]}, {"type": "object"}]},
            "store": boolean,
            "stream": boolean,
            "background": boolean,
            "parallel_tool_calls": boolean,
            "metadata": {
                "type": ["object", "null"],
                "maxProperties": METADATA_PAIRS,
                "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX},
            },
            "temperature": number,
            "top_p": number,
            "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
            "truncation": {"enum": ["auto", "disabled", None]},
            "service_tier": {"enum": [*SERVICE_TIERS, None]},
            "user": string,
            "safety_identifier": string,
            "prompt_cache_key": string,
        }
    )
    return {
        "type": "object",
        "required": ["model", "input"],
        "properties": properties,
        "additionalProperties": False,
    }
