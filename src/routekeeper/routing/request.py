"""What routing looks at in a chat request, extracted once per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from routekeeper.upstream.messages import all_text, last_user_text


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


def routing_input(
    body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> RoutingInput:
    metadata = body.get("metadata") or {}
    user = body.get("user")
    return RoutingInput(
        text=last_user_text(body),
        all_text=all_text(body),
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
