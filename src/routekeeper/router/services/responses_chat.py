"""Stored Responses items (OpenAI's shape) as the chat messages an upstream receives: a
message item as a chat message, ``function_call`` items as an assistant message's
``tool_calls``, a ``function_call_output`` as a ``tool`` message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def chat_messages(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stored items as chat messages, in order: consecutive ``function_call`` items are the
    ``tool_calls`` of one assistant message (the text of an assistant message right before
    them is its content), a ``function_call_output`` is a ``tool`` message."""
    messages: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] | None = None  # of the last message, while calls may follow
    for item in items:
        kind = item.get("type", "message")
        if kind == "function_call":
            if calls is None:
                last = messages[-1] if messages else {}
                if last.get("role") != "assistant" or "tool_calls" in last:
                    messages.append({"role": "assistant", "content": None})
                calls = messages[-1]["tool_calls"] = []
            calls.append(chat_tool_call(item))
            continue
        calls = None
        if kind == "function_call_output":
            messages.append(chat_tool_message(item))
        else:
            messages.append(chat_message(item))
    return messages


def chat_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message item as a chat message: text parts as text, an image as an
    ``image_url`` part (then the content is a list of parts)."""
    role = item.get("role", "user")
    parts: list[dict[str, Any]] = []
    for part in item.get("content") or []:
        kind = part.get("type")
        if kind == "input_image":
            parts.append(
                {
                    "type": "image_url",
                    "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")},
                }
            )
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        else:
            parts.append({"type": "text", "text": part.get("text", "")})
    if any(p["type"] == "image_url" for p in parts):
        return {"role": role, "content": parts}
    return {"role": role, "content": "".join(p["text"] for p in parts)}


def chat_tool_call(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ``function_call`` item as one of an assistant message's ``tool_calls``."""
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def chat_tool_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ``function_call_output`` item as a ``tool`` message."""
    output = item.get("output")
    if isinstance(output, list):
        output = "".join(part.get("text", "") for part in output)
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output or ""}
