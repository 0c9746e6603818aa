"""What routing looks at in a chat request, extracted once per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RoutingInput:
    text: str
    """The last user message's text: what keyword, regex and embedding signals read."""
    all_text: str
    """Every message's text, for context length."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Lower-cased header names."""


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def user_text(body: Mapping[str, Any]) -> str:
    """Every user message's text, one per line (what replay captures as the prompt)."""
    return "\n".join(
        content_text(m.get("content"))
        for m in body.get("messages") or []
        if isinstance(m, dict) and m.get("role") == "user"
    )


def routing_input(
    body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> RoutingInput:
    messages = body.get("messages") or []
    texts = [content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    last_user = next(
        (
            content_text(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    metadata = body.get("metadata") or {}
    user = body.get("user")
    return RoutingInput(
        text=last_user,
        all_text="\n".join(texts),
        metadata={str(k): str(v) for k, v in metadata.items()}
        if isinstance(metadata, dict)
        else {},
        user=user if isinstance(user, str) else None,
        headers={k.lower(): v for k, v in (headers or {}).items()},
    )


def prompt_input(
    prompt: str,
    *,
    metadata: Mapping[str, str] | None = None,
    user: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> RoutingInput:
    """A single user prompt as routing input (for explain)."""
    return routing_input(
        {
            "messages": [{"role": "user", "content": prompt}],
            "metadata": dict(metadata or {}),
            "user": user,
        },
        headers,
    )
